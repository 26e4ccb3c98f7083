# The demo run: the same settings as train.py's defaults, written out to show the config file mechanism.
# Only `name = literal` lines are allowed; train.py parses this file, it never runs it.
# offload run train.py config/train_demo.py
out_dir = 'out'
data = ''  # '' trains on the Python standard library's own sources, which every machine has
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
dropout = 0.0
batch_size = 32
max_iters = 500
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 50
eval_interval = 100
log_interval = 10
