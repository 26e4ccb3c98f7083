"""What nanoGPT prints and how it picks its device and precision, read from its lines and arguments.

nanoGPT prints `iter N: loss X, time Yms, mfu Z%` every log_interval iterations, its mfu measured against an
A100's bf16 peak (312 TFLOPS) whatever the device: printed mfu × 312 TFLOPS is the FLOP/s it achieved.
Pure functions on plain data.
"""
from __future__ import annotations

import re

A100_BF16_PEAK_TFLOPS = 312.0  # nanoGPT's yardstick for every device (model.py: `flops_promised = 312e12`)
ITER_LINE = re.compile(r"iter (\d+): loss (\S+?), time ([0-9.]+)ms, mfu (-?[0-9.]+)%")
TOKENS_LINE = re.compile(r"tokens per iteration(?: will be)?:\s*(\d[\d,_]*)", re.IGNORECASE)


def parse_nanogpt_line(line: str) -> dict | None:
    """{'iter', 'loss', 'time_s', 'mfu'} from `iter N: loss X, time Yms, mfu Z%`, else None.

    'mfu' is the printed figure as a fraction (26.88% -> 0.2688); negative (-100.00%) means nanoGPT has not
    measured it yet. The line may carry a prefix (a timestamp, a rank tag) but nothing after the '%'.
    """
    match = ITER_LINE.search(line)
    if not match or line[match.end():].strip():
        return None
    try:
        loss = float(match.group(2))
    except ValueError:
        return None
    return {"iter": int(match.group(1)), "loss": loss, "time_s": float(match.group(3)) / 1000,
            "mfu": float(match.group(4)) / 100}


def parse_tokens_per_iter(line: str) -> int | None:
    """nanoGPT's `tokens per iteration will be: 491,520`, or the example's `tokens per iteration: 2,048 (...)`."""
    match = TOKENS_LINE.search(line)
    return int(match.group(1).replace(",", "").replace("_", "")) if match else None


def arg_value(args: list, key: str) -> str | None:
    """The value of the last `--key=value` in args (nanoGPT's configurator applies them in order)."""
    prefix = f"--{key}="
    values = [arg[len(prefix):] for arg in args if isinstance(arg, str) and arg.startswith(prefix)]
    return values[-1] if values else None


def nanogpt_device(args: list, host_has_cuda: bool) -> str:
    """'cuda', 'cpu' or 'mps': `--device=` when given (cuda:1 is 'cuda'), else the host's GPU if it has one."""
    device = arg_value(args, "device")
    if device is None:
        return "cuda" if host_has_cuda else "cpu"
    return device.split(":")[0]


def nanogpt_dtype(args: list, device_kind: str, bf16_supported: bool, compute_capability: float | None = None) -> str:
    """The precision nanoGPT's matmuls run in: 'fp32', 'tf32', 'bf16' or 'fp16'.

    `--dtype=` when given, else nanoGPT's choice: bfloat16 where torch.cuda.is_bf16_supported() (pass what
    the host's torch says), float16 otherwise. nanoGPT autocasts on CUDA only, so a CPU run is fp32 whatever
    --dtype says. nanoGPT allows TF32, so float32 on a GPU of compute capability 8.0 or later is 'tf32'.
    """
    if device_kind == "cpu":
        return "fp32"
    name = arg_value(args, "dtype") or ("bfloat16" if bf16_supported else "float16")
    name = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name)
    if name == "fp32" and device_kind == "cuda" and compute_capability is not None and compute_capability >= 8.0:
        return "tf32"
    return name
