"""What nanoGPT prints and how it picks its device and precision, read from its lines and arguments.

nanoGPT prints `iter N: loss X, time Yms, mfu Z%` every log_interval iterations, its mfu measured against an
A100's bf16 peak (312 TFLOPS) whatever the device: printed mfu × 312 TFLOPS is the FLOP/s it achieved, but only to
two decimals of a percent (on a CPU, 0.01% of an A100 is 9.4% of the CPU). So offload counts the FLOPs itself, as
nanoGPT's estimate_mfu does, from what it prints about its model (NanoGptModel) and each iteration's time.
Pure functions on plain data.
"""
from __future__ import annotations

import re

A100_BF16_PEAK_TFLOPS = 312.0  # nanoGPT's yardstick for every device (model.py: `flops_promised = 312e12`)
ITER_LINE = re.compile(r"iter (\d+): loss (\S+?), time ([0-9.]+)ms, mfu (-?[0-9.]+)%")
TOKENS_LINE = re.compile(r"tokens per iteration(?: will be)?:\s*(\d[\d,_]*)", re.IGNORECASE)
PARAMS_LINE = re.compile(r"number of parameters:\s*([0-9]+(?:\.[0-9]+)?)M\b")  # model.py: get_num_params(), in millions
SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size")
TRAIN_DEFAULTS = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024}  # train.py's, for GPT-2 124M
# `found vocab_size = 65 (inside ...meta.pkl)`, or `defaulting to vocab_size of GPT-2 to 50304 (...)`
VOCAB_LINE = re.compile(r"vocab_size(?: of GPT-2)? (?:=|to) (\d+)")
GPT2_VOCAB = 50304
SHAPE_TOLERANCE = 0.05  # parameters counted from the shape vs printed: biases, and rounding to 0.01M, stay inside
# `Overriding: n_layer = 6` for a --key=value, and a config file's own lines, which nanoGPT prints whole.
SHAPE_LINE = re.compile(r"^(?:Overriding:\s*)?(n_layer|n_head|n_embd|block_size)\s*=\s*(\d+)\s*(?:#.*)?$")


class NanoGptModel:
    """nanoGPT's model as its output describes it: the parameter count it prints (without the position
    embeddings, as get_num_params() counts them) and its shape, from train.py's defaults, each `Overriding:` line
    and the lines of the config file it prints. flops_per_token is estimate_mfu's: 6N + 12·L·H·Q·T, and None
    unless the shape accounts for the parameters printed (a fork that prints no config, a pretrained model)."""

    def __init__(self):
        self.params, self.vocab, self.shape = None, None, dict(TRAIN_DEFAULTS)

    def feed(self, line: str) -> bool:
        """Take what the line says about the model; whether it said anything."""
        for pattern, name in ((PARAMS_LINE, "params"), (VOCAB_LINE, "vocab")):
            found = pattern.search(line)
            if found:
                setattr(self, name, float(found.group(1)) * 1e6 if name == "params" else int(found.group(1)))
                return True
        found = SHAPE_LINE.match(line.strip())
        if found:
            self.shape[found.group(1)] = int(found.group(2))
        return bool(found)

    def shape_params(self) -> float:
        """The parameters get_num_params() counts for this shape, without biases: per layer the attention's 4E²
        and the MLP's 8E² and two layer norms, then the token embedding (tied to the head) and the last norm."""
        layers, width = self.shape["n_layer"], self.shape["n_embd"]
        return layers * (12 * width * width + 2 * width) + (self.vocab or GPT2_VOCAB) * width + width

    @property
    def flops_per_token(self) -> float | None:
        if self.params is None or not self.shape["n_head"]:
            return None
        if abs(self.shape_params() / self.params - 1) > SHAPE_TOLERANCE:
            return None
        layers, heads, width, block = (self.shape[key] for key in SHAPE_KEYS)
        return 6 * self.params + 12 * layers * heads * (width // heads) * block


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
