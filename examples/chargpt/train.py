"""Train a small character-level GPT.

    python train.py                              # defaults below, a corpus made of Python's own stdlib sources
    python train.py config/train_demo.py         # a config file of `name = literal` lines
    python train.py --device=cuda --batch_size=64 --data=input.txt
"""
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from configurator import ConfigError, parse_config
from model import GPT, GPTConfig

try:  # offload puts it on the PYTHONPATH: it records each step's FLOPs and time for an honest MFU
    import offload_metrics
except ImportError:
    offload_metrics = None

A100_BF16_PEAK_TFLOPS = 312.0  # nanoGPT's yardstick, only where offload gives no peak for this device
MFU_WARMUP_ITERS = 3  # as offload's summary: the first iterations pay for compilation and cold caches

# -----------------------------------------------------------------------------
# defaults; a config file, then --key=value, may override any of them (see configurator.py)
out_dir = 'out'  # where ckpt.pt is written (and read by --init_from=resume)
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/ckpt.pt)
data = ''  # path of a text file to train on; '' = the Python standard library's .py sources
corpus_chars = 1_000_000  # size of the default corpus, in characters
eval_interval = 100  # evaluate train/val loss (and save a checkpoint) every this many iterations
eval_iters = 10  # batches averaged per split for each evaluation
log_interval = 10  # print a training line every this many iterations
sample_chars = 200  # characters generated from the model at the end (0: none)
seed = 1337  # random seed for initialisation and batches
# model
n_layer = 4  # transformer blocks
n_head = 4  # attention heads per block
n_embd = 128  # embedding width
block_size = 64  # context length, in characters
dropout = 0.0  # dropout rate; 0 for short runs
# optimiser: AdamW, linear warmup, then cosine decay to min_lr at max_iters
batch_size = 32  # sequences per iteration
max_iters = 500  # total training iterations (a resumed run continues up to this number)
learning_rate = 1e-3  # peak learning rate
min_lr = 1e-4  # learning rate at max_iters
warmup_iters = 50  # iterations of linear warmup
weight_decay = 0.1  # applied to matrices only, not to biases or LayerNorm
grad_clip = 1.0  # clip gradients at this global norm (0: off)
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda' or 'cuda:N'
dtype = 'auto'  # 'auto' (bfloat16 on CUDA when supported, else float32), 'float32' or 'bfloat16'
compile = False  # torch.compile the model (pays off only on a GPU and longer runs)
# -----------------------------------------------------------------------------


config_keys = [k for k, v in globals().items() if not k.startswith('_') and type(v) in (int, float, bool, str)]
try:
    config = parse_config(sys.argv[1:], {k: globals()[k] for k in config_keys})
    if config['init_from'] not in ('scratch', 'resume'):
        raise ConfigError(f"--init_from expects scratch or resume, got {config['init_from']!r}")
    if config['dtype'] not in ('auto', 'float32', 'bfloat16'):
        raise ConfigError(f"--dtype expects auto, float32 or bfloat16, got {config['dtype']!r}")
    if config['device'] != 'cpu' and not config['device'].startswith('cuda'):
        raise ConfigError(f"--device expects cpu, cuda or cuda:N, got {config['device']!r}")
    if config['device'] != 'cpu' and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but this machine has no usable CUDA GPU; use --device=cpu")
except ConfigError as e:
    print(f"train.py: {e}", file=sys.stderr)
    sys.exit(2)
globals().update(config)
# -----------------------------------------------------------------------------

torch.manual_seed(seed)
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
if device_type == 'cpu':
    dtype = 'float32'  # autocast is used on CUDA only: on CPU the small matmuls gain nothing from it
elif dtype == 'auto':
    dtype = 'bfloat16' if torch.cuda.is_bf16_supported() else 'float32'
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
autocast = torch.autocast('cuda', dtype=torch.bfloat16) if dtype == 'bfloat16' else nullcontext()
gpu_name = f" ({torch.cuda.get_device_name(device)})" if device_type == 'cuda' else ''
print(f"device: {device}{gpu_name}, dtype: {dtype}", flush=True)


def stdlib_corpus(n_chars):
    """The standard library's own sources: the same text on every machine with the same Python."""
    stdlib_dir = os.path.dirname(os.__file__)
    parts, total = [], 0
    for name in sorted(os.listdir(stdlib_dir)):
        if name.endswith('.py') and total < n_chars:
            with open(os.path.join(stdlib_dir, name), encoding='utf-8', errors='replace') as f:
                parts.append(f.read())
            total += len(parts[-1])
    return ''.join(parts)[:n_chars]


try:
    text = Path(data).read_text(encoding='utf-8', errors='replace') if data else stdlib_corpus(corpus_chars)
except OSError as e:
    print(f"train.py: cannot read --data file: {e}", file=sys.stderr)
    sys.exit(2)
print(f"corpus: {len(text):,} characters from {data or 'the Python standard library'}", flush=True)

ckpt_path = os.path.join(out_dir, 'ckpt.pt')
checkpoint = None
if init_from == 'resume':
    if not os.path.exists(ckpt_path):
        print(f"train.py: no checkpoint at {ckpt_path} to resume from; train once without --init_from=resume",
              file=sys.stderr)
        sys.exit(2)
    checkpoint = torch.load(ckpt_path, map_location=device)
    for k in ('n_layer', 'n_head', 'n_embd', 'block_size'):  # the model's shape is the checkpoint's
        config[k] = globals()[k] = checkpoint['config'][k]
chars = checkpoint['vocabulary'] if checkpoint else sorted(set(text))
stoi = {ch: i for i, ch in enumerate(chars)}
unknown = set(text) - set(stoi)
if unknown:
    print(f"train.py: the corpus has {len(unknown)} characters the checkpoint's vocabulary lacks", file=sys.stderr)
    sys.exit(2)
print(f"vocab size: {len(chars)}", flush=True)
encoded = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
split = int(0.9 * len(encoded))
splits = {'train': encoded[:split], 'val': encoded[split:]}


def get_batch(name):
    d = splits[name]
    ix = torch.randint(len(d) - block_size, (batch_size,))
    x = torch.stack([d[i:i + block_size] for i in ix])
    y = torch.stack([d[i + 1:i + 1 + block_size] for i in ix])
    if device_type == 'cuda':  # pinned memory lets the copy overlap with the GPU's work
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x, y


tokens_per_iter = batch_size * block_size
print(f"tokens per iteration: {tokens_per_iter:,} ({batch_size} sequences of {block_size})", flush=True)

model_config = GPTConfig(vocab_size=len(chars), block_size=block_size, n_layer=n_layer, n_head=n_head,
                         n_embd=n_embd, dropout=dropout)
model = GPT(model_config).to(device)
print(f"number of parameters: {model.get_num_params() / 1e6:.2f}M", flush=True)
param_groups = [{'params': [p for p in model.parameters() if p.dim() >= 2], 'weight_decay': weight_decay},
                {'params': [p for p in model.parameters() if p.dim() < 2], 'weight_decay': 0.0}]
optimizer = torch.optim.AdamW(param_groups, lr=learning_rate, betas=(0.9, 0.99), fused=device_type == 'cuda')
iter_num, best_val_loss = 0, float('inf')
if checkpoint:
    model.load_state_dict(checkpoint['model'])
    optimizer.load_state_dict(checkpoint['optimizer'])
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    print(f"resuming from {ckpt_path} at iter {iter_num}", flush=True)
train_model = torch.compile(model) if compile else model


def get_lr(it):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    progress = min(1.0, (it - warmup_iters) / max(1, max_iters - warmup_iters))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


@torch.no_grad()
def estimate_loss():
    train_model.eval()
    out = {}
    for name in splits:
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            with autocast:
                _, loss = train_model(*get_batch(name))
            losses[k] = loss.item()
        out[name] = losses.mean().item()
    train_model.train()
    return out


def stop_if_diverged(loss_value):
    if not math.isfinite(loss_value):
        print(f"train.py: the loss became {loss_value} at iter {iter_num}; try a lower --learning_rate",
              file=sys.stderr)
        sys.exit(1)


def count_flops_per_iter():
    """Model FLOPs of one iteration (forward and backward of one batch), counted once on the real model.

    The random state is forked and the gradients dropped, so training goes on exactly as without counting.
    """
    def forward_backward(x, y):
        with autocast:
            _, loss = model(x, y)
        loss.backward()

    with torch.random.fork_rng(devices=[device] if device_type == 'cuda' else []):
        flops = offload_metrics.count_step_flops(forward_backward, X, Y)
    model.zero_grad(set_to_none=True)
    return flops


def save_checkpoint():
    os.makedirs(out_dir, exist_ok=True)
    torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'config': config,
                'iter_num': iter_num, 'best_val_loss': best_val_loss, 'vocabulary': chars}, ckpt_path)


if iter_num >= max_iters:
    print(f"nothing to train: the checkpoint is at iter {iter_num} and max_iters is {max_iters}", flush=True)
X, Y = get_batch('train')
flops_per_iter = None
if offload_metrics and offload_metrics.enabled():
    flops_per_iter = count_flops_per_iter()
    tf32 = device_type == 'cuda' and torch.cuda.get_device_capability(device)[0] >= 8  # allowed above; Ampere+
    matmul_dtype = 'bf16' if dtype == 'bfloat16' else 'tf32' if tf32 else 'fp32'
    print(f"model FLOPs per iteration (counted): {flops_per_iter:,}", flush=True)
iter_flops = flops_per_iter or model.estimate_flops_per_iter(batch_size)
peak_tflops = float(os.environ.get('OFFLOAD_PEAK_TFLOPS') or 0)  # this device's, from offload
if peak_tflops:
    print(f"mfu against {peak_tflops:g} TFLOPS: this device's {os.environ.get('OFFLOAD_PEAK_DTYPE', '')} peak "
          "(OFFLOAD_PEAK_TFLOPS)", flush=True)
else:
    peak_tflops = A100_BF16_PEAK_TFLOPS
    print(f"mfu against an A100's {peak_tflops:g} TFLOPS (no OFFLOAD_PEAK_TFLOPS: not run by offload)", flush=True)
t0, start_iter, measured_flops, measured_s = time.time(), iter_num, 0.0, 0.0
losses = None
while True:
    if iter_num % eval_interval == 0 or iter_num == max_iters:
        losses = estimate_loss()
        stop_if_diverged(losses['train'])
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
        best_val_loss = min(best_val_loss, losses['val'])
        if iter_num > start_iter:
            save_checkpoint()
        t0 = time.time()  # evaluation time is not training time
    if iter_num >= max_iters:
        break
    for group in optimizer.param_groups:
        group['lr'] = get_lr(iter_num)
    with autocast:
        _, loss = train_model(X, Y)
    X, Y = get_batch('train')  # fetch the next batch while the GPU works on this one
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t1 = time.time()
    dt, t0 = t1 - t0, t1
    lossf = loss.item() if iter_num % log_interval == 0 else None  # a GPU sync; only on logging iterations
    if flops_per_iter:
        offload_metrics.log_step(iter_num, flops_per_iter, dt, tokens=tokens_per_iter, loss=lossf,
                                 dtype=matmul_dtype, per_rank=True)
    if iter_num - start_iter >= MFU_WARMUP_ITERS:
        measured_flops, measured_s = measured_flops + iter_flops, measured_s + dt
    if lossf is not None:
        stop_if_diverged(lossf)
        mfu = measured_flops / measured_s / (peak_tflops * 1e12) if measured_s else -1.0  # since the warm-up
        print(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms, mfu {mfu * 100:.2f}%", flush=True)
    iter_num += 1

if iter_num > start_iter:
    mfu = measured_flops / measured_s / (peak_tflops * 1e12) if measured_s else -1.0  # every iteration after warm-up
    print(f"final: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
          f"best val loss {best_val_loss:.4f}, mfu {mfu * 100:.2f}%; saved {ckpt_path}", flush=True)
if sample_chars:
    model.eval()
    start = torch.tensor([[stoi.get('\n', 0)]], device=device)
    with autocast:
        sample = model.generate(start, sample_chars, temperature=0.8)[0].tolist()
    print('sample:\n' + ''.join(chars[i] for i in sample), flush=True)
