"""What to change about a run that costs it MFU: short sentences from what is known before and after it."""
from __future__ import annotations

from dataclasses import dataclass, field

from offload.mfu.nanogpt import arg_value

# A matrix multiplication over batch·block rows gives a big GPU (100+ SMs, each taking 128×128 output tiles)
# a few waves of work only from a few thousand rows up with nanoGPT-sized widths (n_embd 128-768); below
# 4096 tokens per micro-batch most SMs idle and the dozens of kernel launches per layer dominate.
SMALL_BATCH_TOKENS = 4096
FAST_ITER_S = 0.010  # under 10 ms an iteration is short next to a print's GPU sync and output
HIGH_MFU = 0.5  # above this, a run is doing well: no hints beyond --device=cpu on a GPU host
FALSE_WORDS = ("false", "0", "no", "off")
BUSY_UTIL, LOW_MFU = 80.0, 0.15  # the GPU reports itself busy this much of the time, yet does this little of its peak
IDLE_UTIL = 50.0  # below this the GPU waits for work about half the time


@dataclass
class RunFacts:
    """What hints() looks at, all known before or after a run; None where unknown.

    args: the script's arguments as given; device_kind: 'cuda', 'cpu' or 'mps', where the run computed
    (nanogpt_device); host_has_cuda: the host has a usable CUDA GPU; compute_capability: its GPU's, e.g.
    8.6; dtype: 'fp32', 'tf32', 'bf16' or 'fp16' (nanogpt_dtype, or the metrics'); time_per_iter_s and mfu:
    observed (MfuTracker.summary); tokens_per_iter: from the output, used when the args do not give both
    --batch_size and --block_size.
    """
    args: list = field(default_factory=list)
    device_kind: str = "cpu"
    host_has_cuda: bool = False
    compute_capability: float | None = None
    dtype: str | None = None
    time_per_iter_s: float | None = None
    mfu: float | None = None
    tokens_per_iter: int | None = None
    gpu_util_mean: float | None = None  # nvidia-smi's utilisation over the run, %


def hints(facts) -> list:
    """Short sentences, each saying what to do about one fact that costs MFU. facts: RunFacts or its dict."""
    facts = facts if isinstance(facts, RunFacts) else RunFacts(**facts)
    found = []
    if facts.host_has_cuda and facts.device_kind == "cpu":
        found.append("--device=cpu keeps this run off the host's GPU: drop it, or pass --device=cuda."
                     if arg_value(facts.args, "device") == "cpu" else
                     "this run computed on the CPU although the host has a GPU: pass --device=cuda.")
    if facts.mfu is not None and facts.mfu >= HIGH_MFU:
        return found
    on_gpu = facts.device_kind == "cuda"
    if on_gpu and (arg_value(facts.args, "compile") or "").lower() in FALSE_WORDS:
        found.append("--compile=False on a GPU: torch.compile usually speeds training up well; drop the flag.")
    if on_gpu and facts.dtype in ("fp32", "tf32") and (facts.compute_capability or 0) >= 8.0:
        found.append(f"{facts.dtype} matmuls on a GPU with bf16 tensor cores: pass --dtype=bfloat16, whose peak is "
                     "twice TF32's and many times FP32's.")
    tokens = batch_tokens(facts)
    if on_gpu and tokens is not None and tokens < SMALL_BATCH_TOKENS:
        found.append(f"only {tokens:,} tokens per batch keep a GPU mostly idle: raise --batch_size "
                     f"(or --block_size) to {SMALL_BATCH_TOKENS:,} tokens or more.")
    if arg_value(facts.args, "log_interval") == "1" and facts.time_per_iter_s is not None \
            and facts.time_per_iter_s < FAST_ITER_S:
        found.append(f"--log_interval=1 prints (and waits for the GPU) every {facts.time_per_iter_s * 1000:.1f} ms "
                     "iteration: pass --log_interval=10 or more.")
    found.extend(gpu_hints(facts))
    return found


def gpu_hints(facts: RunFacts) -> list:
    """What the GPU's own utilisation says next to the MFU: busy but slow is launch-bound, idle is input-bound."""
    util = facts.gpu_util_mean
    if util is None or facts.device_kind != "cuda":
        return []
    if util >= BUSY_UTIL and facts.mfu is not None and facts.mfu < LOW_MFU:
        return [f"the GPU was busy {util:.0f}% of the time yet reached {facts.mfu * 100:.1f}% MFU: many small kernels "
                "(launch-bound); raise --batch_size, use torch.compile, or fewer, bigger layers."]
    if util < IDLE_UTIL:
        return [f"the GPU was busy only {util:.0f}% of the time: the run is input-bound (waiting for data or the "
                "CPU); load batches in DataLoader workers with pin_memory, or keep the data on the GPU."]
    return []


def batch_tokens(facts: RunFacts) -> int | None:
    """batch_size × block_size from the args, else the printed tokens per iteration."""
    batch, block = arg_value(facts.args, "batch_size"), arg_value(facts.args, "block_size")
    if batch and block and batch.isdigit() and block.isdigit():
        return int(batch) * int(block)
    return facts.tokens_per_iter
