"""Honest numbers for stock nanoGPT (issue 16, point 3): offload counts its FLOPs from what it prints (the
parameter count, its config, tokens per iteration) and each iteration's time, instead of rescaling its
two-decimal mfu, which it measures against an A100; within 5% of FlopCounterMode's count on the seed's config."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from offload.mfu.nanogpt import NanoGptModel
from offload.mfu.report import status_text
from offload.mfu.tracker import MfuTracker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "remote_agent" / "lib"))
import offload_metrics  # noqa: E402  (what jobs import: FlopCounterMode, with attention on every kernel)

# What stock nanoGPT prints for `python train.py config/train_shakespeare_char.py --batch_size=32` (the seed's
# command) before its first iteration: the config file whole, then each --key=value, then its model.
SEED_CONFIG = """\
Overriding config with config/train_shakespeare_char.py:
# train a miniature character-level shakespeare model
# good for debugging and playing on macbooks and such

out_dir = 'out-shakespeare-char'
eval_interval = 250 # keep frequent because we'll overfit
eval_iters = 200
log_interval = 10 # don't print too too often

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256 # context of up to 256 previous characters

# baby GPT model :)
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

# on macbook also add
# device = 'cpu'  # run on cpu only
Overriding: batch_size = 32
tokens per iteration will be: 8,192
found vocab_size = 65 (inside data/shakespeare_char/meta.pkl)
Initializing a new model from scratch
number of parameters: 10.65M
"""
# A laptop CPU's iterations: nanoGPT prints 0.01% (of an A100) for what is 0.25 TFLOPS, 0.08% of one.
SEED_ITERATIONS = """\
iter 0: loss 4.2599, time 35133.52ms, mfu -100.00%
iter 10: loss 3.2238, time 2213.40ms, mfu -100.00%
iter 20: loss 2.9150, time 2230.12ms, mfu 0.01%
iter 30: loss 2.7309, time 2208.77ms, mfu 0.01%
iter 40: loss 2.6210, time 2251.03ms, mfu 0.01%
"""
SEED_FLOPS_PER_TOKEN = 6 * 10.65e6 + 12 * 6 * 6 * (384 // 6) * 256


def fed(text: str, **kwargs) -> MfuTracker:
    tracker = MfuTracker(**kwargs)
    for line in text.splitlines():
        tracker.feed_line(line)
    return tracker


def example_model(**shape):
    """The bundled example's GPT (the same blocks as nanoGPT's: attention, a 4x MLP, a tied head)."""
    spec = importlib.util.spec_from_file_location("chargpt_model", REPO / "examples" / "chargpt" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GPT(module.GPTConfig(**shape))


def test_flops_from_what_nanogpt_prints_are_within_5_percent_of_flopcountermode_on_the_seed_s_config():
    torch.manual_seed(0)
    model = example_model(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0, bias=False)
    tokens = torch.randint(65, (1, 256))

    def forward_backward(x, y):
        _, loss = model(x, y)
        loss.backward()

    counted = offload_metrics.count_step_flops(forward_backward, tokens, tokens)
    printed = NanoGptModel()
    for line in SEED_CONFIG.replace("10.65M", f"{model.get_num_params() / 1e6:.2f}M").splitlines():
        printed.feed(line)
    assert printed.shape == {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256}
    assert printed.flops_per_token * 256 == pytest.approx(counted, rel=0.05)


def test_the_seed_s_run_is_measured_from_its_iteration_times_not_its_two_decimal_mfu():
    peak = 1.0  # TFLOPS, a laptop CPU's
    tracker = fed(SEED_CONFIG + SEED_ITERATIONS, peak_tflops=peak)
    summary = tracker.summary()
    time_per_iter = (2.23012 + 2.21340) / 2  # the median of the lines after the first (its compilation)
    achieved = SEED_FLOPS_PER_TOKEN * 8192 / time_per_iter
    assert summary["method"] == "model" and summary["time_per_iter_s"] == pytest.approx(time_per_iter)
    assert summary["achieved_tflops"] == pytest.approx(achieved / 1e12)
    assert summary["mfu"] == pytest.approx(achieved / 1e12 / peak)  # 26%: the printed 0.01% would say 3.1%
    status = tracker.status()  # the latest line, from its own time, before nanoGPT itself prints any mfu
    assert status["mfu"] == pytest.approx(SEED_FLOPS_PER_TOKEN * 8192 / 2.25103 / 1e12 / peak)
    assert "nanoGPT's own mfu is of an A100's 312 TFLOPS" in status_text(status)


def test_a_shape_that_does_not_account_for_the_printed_parameters_is_not_believed():
    """No config printed (a fork, or a log cut short): train.py's defaults are GPT-2's 124M, not 10.65M."""
    without_config = SEED_CONFIG.split("Overriding: batch_size = 32\n")[1] + SEED_ITERATIONS
    tracker = fed(without_config, peak_tflops=1.0)
    assert tracker.model.flops_per_token is None
    summary = tracker.summary()
    assert summary["method"] == "printed"
    assert summary["achieved_tflops"] == pytest.approx(0.0001 * 312)  # nanoGPT's own figure, rescaled
    # A pretrained GPT-2 (no config lines; its defaults are the model's shape): believed.
    gpt2 = fed("defaulting to vocab_size of GPT-2 to 50304 (50257 rounded up for efficiency)\n"
               "number of parameters: 123.69M\n")
    assert gpt2.model.flops_per_token == pytest.approx(6 * 123.69e6 + 12 * 12 * 12 * 64 * 1024)
