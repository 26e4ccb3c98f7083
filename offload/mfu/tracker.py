"""MFU from figures: what a run's output and metrics say about how well it used its device.

MFU (model FLOPs utilisation, PaLM appendix B) is the model FLOPs a run did per second over the peak
FLOP/s of the device it ran on. Two sources, in order of trust:

- metrics: lines a script wrote through remote_agent/lib/offload_metrics.py (the protocol is documented
  there): each step's FLOPs, all ranks together, and wall time. MFU = sum(flops) / sum(seconds) / peak over
  the steps after the first METRICS_WARMUP_STEPS.
- the log: nanoGPT's `iter N: loss X, time Yms, mfu Z%` lines. nanoGPT measures its mfu against an A100's
  bf16 peak (312 TFLOPS) whatever the device, so printed mfu × 312 TFLOPS is the FLOP/s it achieved, and
  that over the real peak is the honest MFU. See MfuTracker for which printed values count.

Pure functions on plain data; no torch, no files.
"""
from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field

A100_BF16_PEAK_TFLOPS = 312.0  # nanoGPT's yardstick for every device (model.py: `flops_promised = 312e12`)
# A well-tuned mid-sized transformer (nanoGPT's GPT-2 124M with bf16 and torch.compile, on one A100 or
# H100) reports an MFU of roughly 30-40%; 0.35 is that middle. Small models and small batches reach far
# less, so an estimate made with it is optimistic: prefer the host's own last comparable run.
DEFAULT_GPU_MFU = 0.35
METRICS_WARMUP_STEPS = 3  # the first steps pay for compilation, allocator growth and cold caches
LIVE_WINDOW_STEPS = 50  # the live status line averages the latest steps, so it follows a run's changes
# A matrix multiplication over batch·block rows gives a big GPU (100+ SMs, each taking 128×128 output tiles)
# a few waves of work only from a few thousand rows up with nanoGPT-sized widths (n_embd 128-768); below
# 4096 tokens per micro-batch most SMs idle and the dozens of kernel launches per layer dominate.
SMALL_BATCH_TOKENS = 4096
FAST_ITER_S = 0.010  # under 10 ms an iteration is short next to a print's GPU sync and output
HIGH_MFU = 0.5  # above this, a run is doing well: no hints beyond --device=cpu on a GPU host

ITER_LINE = re.compile(r"iter (\d+): loss (\S+?), time ([0-9.]+)ms, mfu (-?[0-9.]+)%")
TOKENS_LINE = re.compile(r"tokens per iteration(?: will be)?:\s*(\d[\d,_]*)", re.IGNORECASE)
FALSE_WORDS = ("false", "0", "no", "off")


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


def parse_metrics_line(line: str) -> dict | None:
    """One record of the offload_metrics protocol, or None for anything else (a torn last line, noise)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if valid_metrics(record) else None


def valid_metrics(record) -> bool:
    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    return (isinstance(record, dict) and isinstance(record.get("step"), int) and number(record.get("flops"))
            and record["flops"] >= 0 and number(record.get("seconds")) and record["seconds"] >= 0)


def rescale_nanogpt_mfu(printed_mfu_fraction: float, peak_tflops: float) -> float:
    """nanoGPT's printed mfu (a fraction of 312 TFLOPS) as a fraction of the real device's peak."""
    return printed_mfu_fraction * A100_BF16_PEAK_TFLOPS / peak_tflops


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


def estimate_seconds_on(total_flops: float, peak_tflops: float, mfu: float | None = None) -> float:
    """Wall time the same work would take on a device of `peak_tflops` running at `mfu` (DEFAULT_GPU_MFU if None).

    total_flops: the local run's work, summary()['total_flops'] (the metrics' sum, or from the log achieved
    FLOP/s × time per iteration × iterations).
    """
    mfu = DEFAULT_GPU_MFU if mfu is None else mfu
    if peak_tflops <= 0 or mfu <= 0:
        raise ValueError(f"peak_tflops and mfu must be positive, got {peak_tflops} and {mfu}")
    return total_flops / (peak_tflops * 1e12 * mfu)


def median(values: list) -> float | None:
    return statistics.median(values) if values else None


class MfuTracker:
    """Follows one run: feed it output lines and metrics records as they come; ask for status() or summary().

    peak_tflops: the device's peak for the run's dtype, all of the job's GPUs together (None when unknown,
    with peak_reason saying why: the summary's mfu is then None with that reason). peak_source says where the
    figure came from (e.g. 'table: H100 SXM bf16'); it is passed through. devices is how many devices the job
    runs on: nanoGPT prints each process's mfu against one A100, so log figures count once per device, while
    metrics records already hold all ranks' FLOPs. tokens_per_iter may be given, or is
    read from the output. dtype is the run's precision when known; metrics records override it.

    From the log: nanoGPT's printed mfu is a running average (0.9·old + 0.1·new, from its 6th iteration on).
    The summary takes the median of the rescaled positive values after the first positive one (that one is a
    single iteration's figure, and a median shrugs off iterations slowed by evaluation); with one positive
    value, that one. Time per iteration is the median over the same lines (over all lines but the first when
    no mfu was printed). The live status shows the latest line.
    """

    def __init__(self, peak_tflops: float | None = None, peak_source: str | None = None,
                 peak_reason: str | None = None, tokens_per_iter: int | None = None, dtype: str | None = None,
                 devices: int = 1, peak_for=None):
        self.peak_tflops, self.peak_source, self.peak_reason = peak_tflops, peak_source, peak_reason
        self.devices = devices
        self.peak_for = peak_for  # dtype -> (peak_tflops, source, reason): when metrics name the precision
        self.tokens_per_iter, self.dtype = tokens_per_iter, dtype
        self.log_lines: list = []  # parsed iter lines
        self.records: list = []  # metrics records, in arrival order

    def feed_line(self, line: str) -> None:
        parsed = parse_nanogpt_line(line)
        if parsed:
            self.log_lines.append(parsed)
        elif self.tokens_per_iter is None:
            self.tokens_per_iter = parse_tokens_per_iter(line)

    def feed_metrics(self, record: dict) -> bool:
        """Take one metrics record; False (and ignored) when it is not one."""
        if not valid_metrics(record):
            return False
        self.records.append(record)
        if record.get("dtype") and record["dtype"] != self.dtype:
            self.dtype = record["dtype"]
            if self.peak_for is not None:
                self.peak_tflops, self.peak_source, self.peak_reason = self.peak_for(self.dtype)
        return True

    def log_flops_per_s(self, printed_mfu: float) -> float:
        """The job's FLOP/s from nanoGPT's printed mfu: each process's share of one A100, times the processes."""
        return printed_mfu * A100_BF16_PEAK_TFLOPS * 1e12 * self.devices

    def mfu_of(self, flops_per_s: float | None) -> float | None:
        return flops_per_s / (self.peak_tflops * 1e12) if flops_per_s is not None and self.peak_tflops else None

    def status(self) -> dict:
        """Latest iteration, loss, tokens/s and MFU (None where not known yet), for a live status line."""
        if self.records:
            recent = self.measured_records()[-LIVE_WINDOW_STEPS:]
            rates = rates_of(recent)
            losses = [r["loss"] for r in self.records if r.get("loss") is not None]
            return {"iter": self.records[-1]["step"], "loss": losses[-1] if losses else None,
                    "tokens_per_s": rates["tokens_per_s"], "mfu": self.mfu_of(rates["flops_per_s"])}
        if self.log_lines:
            last = self.log_lines[-1]
            flops_per_s = self.log_flops_per_s(last["mfu"]) if last["mfu"] > 0 else None
            tokens_per_s = self.tokens_per_iter / last["time_s"] if self.tokens_per_iter and last["time_s"] else None
            return {"iter": last["iter"], "loss": last["loss"], "tokens_per_s": tokens_per_s,
                    "mfu": self.mfu_of(flops_per_s)}
        return {"iter": None, "loss": None, "tokens_per_s": None, "mfu": None}

    def measured_records(self) -> list:
        """The records after the warm-up: all but the first METRICS_WARMUP_STEPS, never none of them."""
        return self.records[min(METRICS_WARMUP_STEPS, len(self.records) - 1):]

    def summary(self) -> dict:
        """source ('metrics', 'log' or None), mfu (or None, with reason), achieved_tflops, time_per_iter_s,
        tokens_per_s, final_loss, iterations, total_flops, dtype, peak_tflops, peak_source."""
        result = self.summary_from_metrics() if self.records else self.summary_from_log()
        result.update(dtype=self.dtype, peak_tflops=self.peak_tflops, peak_source=self.peak_source)
        if result["mfu"] is None and "reason" not in result:
            result["reason"] = self.peak_reason or "the device's peak FLOP/s is unknown"
        return result

    def summary_from_metrics(self) -> dict:
        measured = self.measured_records()
        rates = rates_of(measured)
        flops_per_s = rates["flops_per_s"]
        losses = [r["loss"] for r in self.records if r.get("loss") is not None]
        result = {"source": "metrics", "mfu": self.mfu_of(flops_per_s),
                  "achieved_tflops": flops_per_s / 1e12 if flops_per_s is not None else None,
                  "time_per_iter_s": rates["seconds"] / len(measured) if rates["seconds"] else None,
                  "tokens_per_s": rates["tokens_per_s"], "final_loss": losses[-1] if losses else None,
                  "iterations": len(self.records), "total_flops": sum(r["flops"] for r in self.records)}
        if flops_per_s is None:
            result["reason"] = "the recorded steps took no measurable time"
        return result

    def summary_from_log(self) -> dict:
        if not self.log_lines:
            return {"source": None, "mfu": None, "reason": "the run printed no iteration lines and wrote no metrics",
                    "achieved_tflops": None, "time_per_iter_s": None, "tokens_per_s": None, "final_loss": None,
                    "iterations": 0, "total_flops": None}
        positive = [line for line in self.log_lines if line["mfu"] > 0]
        chosen = positive[1:] or positive  # the first positive figure is one iteration's, the rest averages
        time_per_iter = median([line["time_s"] for line in chosen or self.log_lines[1:] or self.log_lines])
        printed = median([line["mfu"] for line in chosen])
        flops_per_s = self.log_flops_per_s(printed) if printed is not None else None
        iterations = self.log_lines[-1]["iter"] - self.log_lines[0]["iter"] + 1
        tokens_per_s = self.tokens_per_iter / time_per_iter if self.tokens_per_iter and time_per_iter else None
        result = {"source": "log", "mfu": self.mfu_of(flops_per_s),
                  "achieved_tflops": flops_per_s / 1e12 if flops_per_s else None, "time_per_iter_s": time_per_iter,
                  "tokens_per_s": tokens_per_s, "final_loss": self.log_lines[-1]["loss"], "iterations": iterations,
                  "total_flops": flops_per_s * time_per_iter * iterations if flops_per_s and time_per_iter else None}
        if flops_per_s is None:
            result["reason"] = "the script printed no positive mfu (-100.00% means it had not measured it yet)"
        return result


def rates_of(records: list) -> dict:
    """FLOP/s and tokens/s over records: sums over sums, so a slow step weighs as much as its time."""
    seconds = sum(r["seconds"] for r in records)
    if seconds <= 0:
        return {"seconds": 0.0, "flops_per_s": None, "tokens_per_s": None}
    with_tokens = [r for r in records if r.get("tokens") is not None]
    token_seconds = sum(r["seconds"] for r in with_tokens)
    return {"seconds": seconds, "flops_per_s": sum(r["flops"] for r in records) / seconds,
            "tokens_per_s": sum(r["tokens"] for r in with_tokens) / token_seconds if token_seconds > 0 else None}


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
    return found


def batch_tokens(facts: RunFacts) -> int | None:
    """batch_size × block_size from the args, else the printed tokens per iteration."""
    batch, block = arg_value(facts.args, "batch_size"), arg_value(facts.args, "block_size")
    if batch and block and batch.isdigit() and block.isdigit():
        return int(batch) * int(block)
    return facts.tokens_per_iter
