"""MFU from figures: what a run's output and metrics say about how well it used its device.

MFU (model FLOPs utilisation, PaLM appendix B) is the model FLOPs a run did per second over the peak
FLOP/s of the device it ran on. Two sources, in order of trust:

- metrics: lines a script wrote through remote_agent/lib/offload_metrics.py (the protocol is documented
  there): each step's FLOPs, all ranks together, and wall time. MFU = sum(flops) / sum(seconds) / peak over
  the steps after the first METRICS_WARMUP_STEPS.
- the log: nanoGPT's `iter N: loss X, time Yms, mfu Z%` lines (nanogpt.py). Where it printed its model
  (`number of parameters`, its config), each iteration's FLOP/s is its FLOPs per token (nanogpt.NanoGptModel)
  times `tokens per iteration` over that iteration's time, over the real peak. Otherwise nanoGPT's printed mfu,
  measured against an A100's bf16 peak (312 TFLOPS) whatever the device, times 312 TFLOPS is the FLOP/s, to two
  decimals of a percent. See MfuTracker for which values count.

Pure functions on plain data; no torch, no files.
"""
from __future__ import annotations

import json
import math
import statistics

from offload.mfu.gpu_figures import GpuFigures
from offload.mfu.nanogpt import A100_BF16_PEAK_TFLOPS, NanoGptModel, parse_nanogpt_line, parse_tokens_per_iter

# A well-tuned mid-sized transformer (nanoGPT's GPT-2 124M with bf16 and torch.compile, on one A100 or
# H100) reports an MFU of roughly 30-40%; 0.35 is that middle. Small models and small batches reach far
# less, so an estimate made with it is optimistic: prefer the host's own last comparable run.
DEFAULT_GPU_MFU = 0.35
METRICS_WARMUP_STEPS = 3  # the first steps pay for compilation, allocator growth and cold caches
LIVE_WINDOW_STEPS = 50  # the live status line averages the latest steps, so it follows a run's changes


def valid_metrics(record) -> bool:
    """Whether a record is one of the offload_metrics protocol: an int step, finite non-negative flops and seconds."""
    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    return (isinstance(record, dict) and isinstance(record.get("step"), int) and number(record.get("flops"))
            and record["flops"] >= 0 and number(record.get("seconds")) and record["seconds"] >= 0)


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

    From the log, with the model known: each line's FLOP/s from its own time; the summary takes the median over
    all lines but the first (compilation, warm-up; a median shrugs off iterations slowed by evaluation). Without
    it, from nanoGPT's printed mfu, a running average (0.9·old + 0.1·new, from its 6th iteration on): the median
    of the rescaled positive values after the first positive one (that one is a single iteration's figure); with
    one positive value, that one. Time per iteration is the median over the same lines (over all lines but the
    first when no mfu was printed). The live status shows the latest line.
    """

    def __init__(self, peak_tflops: float | None = None, peak_source: str | None = None,
                 peak_reason: str | None = None, tokens_per_iter: int | None = None, dtype: str | None = None,
                 devices: int = 1, peak_for=None):
        self.peak_tflops, self.peak_source, self.peak_reason = peak_tflops, peak_source, peak_reason
        self.devices = devices
        self.peak_for = peak_for  # dtype -> (peak_tflops, source, reason): when metrics name the precision
        self.tokens_per_iter, self.dtype = tokens_per_iter, dtype
        self.model = NanoGptModel()  # what nanoGPT printed about its model
        self.gpu = GpuFigures()  # the host's GPUs' own figures, where it has nvidia-smi
        self.log_lines: list = []  # parsed iter lines
        self.records: list = []  # metrics records, in arrival order

    def feed_line(self, line: str) -> None:
        parsed = parse_nanogpt_line(line)
        if parsed:
            self.log_lines.append(parsed)
        elif not self.model.feed(line) and self.tokens_per_iter is None:
            self.tokens_per_iter = parse_tokens_per_iter(line)

    def feed_output_lines(self, lines: list) -> None:
        """Whole lines of the run's output, as bytes without their newline."""
        for line in lines:
            self.feed_line(line.decode("utf-8", errors="replace").rstrip("\r"))

    def feed_metrics_lines(self, data: bytes) -> None:
        """Whole lines of the run's metrics.jsonl; a malformed line is the script's problem, not a reason to stop."""
        for line in data.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                self.feed_metrics(record)

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

    @property
    def counts_flops(self) -> bool:
        """Whether log lines' FLOP/s come from the model's FLOPs (else from the printed mfu)."""
        return bool(self.model.flops_per_token and self.tokens_per_iter)

    def line_flops_per_s(self, line: dict) -> float | None:
        """One iteration line's FLOP/s, all processes together: FLOPs per token × tokens per iteration (nanoGPT's
        count, every process's) over the iteration's time; else from the printed mfu (None before it is measured)."""
        if self.counts_flops:
            return self.model.flops_per_token * self.tokens_per_iter / line["time_s"] if line["time_s"] > 0 else None
        return self.printed_flops_per_s(line["mfu"]) if line["mfu"] > 0 else None

    def printed_flops_per_s(self, printed_mfu: float) -> float:
        """The job's FLOP/s from nanoGPT's printed mfu: each process's share of one A100, times the processes."""
        return printed_mfu * A100_BF16_PEAK_TFLOPS * 1e12 * self.devices

    def mfu_of(self, flops_per_s: float | None) -> float | None:
        """None where unknown, and where over 100%: a run cannot beat its peak, so that peak is wrong."""
        if flops_per_s is None or not self.peak_tflops:
            return None
        mfu = flops_per_s / (self.peak_tflops * 1e12)
        return mfu if mfu <= 1.0 else None

    def status(self) -> dict:
        """Latest iteration, loss, tokens/s and MFU (None where not known yet), and the GPUs' latest figures
        (where sampled), for a live status line."""
        status = self.figures_now()
        if self.gpu.latest is not None:
            status["gpu"] = self.gpu.latest
        return status

    def figures_now(self) -> dict:
        if self.records:
            recent = self.measured_records()[-LIVE_WINDOW_STEPS:]
            rates = rates_of(recent)
            losses = [r["loss"] for r in self.records if r.get("loss") is not None]
            return {"iter": self.records[-1]["step"], "loss": losses[-1] if losses else None,
                    "tokens_per_s": rates["tokens_per_s"], "mfu": self.mfu_of(rates["flops_per_s"])}
        if self.log_lines:
            last = self.log_lines[-1]
            tokens_per_s = self.tokens_per_iter / last["time_s"] if self.tokens_per_iter and last["time_s"] else None
            return {"iter": last["iter"], "loss": last["loss"], "tokens_per_s": tokens_per_s,
                    "mfu": self.mfu_of(self.line_flops_per_s(last)), "a100": True}
        return {"iter": None, "loss": None, "tokens_per_s": None, "mfu": None}

    def measured_records(self) -> list:
        """The records after the warm-up: all but the first METRICS_WARMUP_STEPS, never none of them."""
        return self.records[min(METRICS_WARMUP_STEPS, len(self.records) - 1):]

    def summary(self) -> dict:
        """source ('metrics', 'log' or None), mfu (or None, with reason), achieved_tflops, time_per_iter_s,
        tokens_per_s, final_loss, iterations, total_flops, dtype, peak_tflops, peak_source."""
        result = self.summary_from_metrics() if self.records else self.summary_from_log()
        result.update(dtype=self.dtype, peak_tflops=self.peak_tflops, peak_source=self.peak_source, **self.gpu.summary())
        achieved = result["achieved_tflops"]
        if result["mfu"] is None and self.peak_tflops and achieved and achieved > self.peak_tflops:
            result["reason"] = (f"achieved {achieved:.3g} TFLOPS is above the peak of {self.peak_tflops:.3g}, which "
                                "must be too low: measure it with `offload hosts check NAME --bench`, "
                                "or set peak_tflops in hosts.yaml")
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
        method, time_per_iter, flops_per_s = self.log_rates()
        iterations = self.log_lines[-1]["iter"] - self.log_lines[0]["iter"] + 1
        tokens_per_s = self.tokens_per_iter / time_per_iter if self.tokens_per_iter and time_per_iter else None
        result = {"source": "log", "method": method, "mfu": self.mfu_of(flops_per_s),
                  "achieved_tflops": flops_per_s / 1e12 if flops_per_s else None, "time_per_iter_s": time_per_iter,
                  "tokens_per_s": tokens_per_s, "final_loss": self.log_lines[-1]["loss"], "iterations": iterations,
                  "total_flops": flops_per_s * time_per_iter * iterations if flops_per_s and time_per_iter else None}
        if flops_per_s is None:
            result["reason"] = "the script printed no positive mfu (-100.00% means it had not measured it yet)"
        return result

    def log_rates(self) -> tuple:
        """(method, time per iteration, FLOP/s) from the iteration lines: 'model' where the model's FLOPs are
        known (every line but the first: compilation, warm-up), else 'printed' from nanoGPT's mfu."""
        if self.counts_flops:
            time_per_iter = median([line["time_s"] for line in self.log_lines[1:] or self.log_lines])
            flops = self.model.flops_per_token * self.tokens_per_iter / time_per_iter if time_per_iter else None
            return "model", time_per_iter, flops
        positive = [line for line in self.log_lines if line["mfu"] > 0]
        chosen = positive[1:] or positive  # the first positive figure is one iteration's, the rest averages
        time_per_iter = median([line["time_s"] for line in chosen or self.log_lines[1:] or self.log_lines])
        printed = median([line["mfu"] for line in chosen])
        return "printed", time_per_iter, self.printed_flops_per_s(printed) if printed is not None else None


def rates_of(records: list) -> dict:
    """FLOP/s and tokens/s over records: sums over sums, so a slow step weighs as much as its time."""
    seconds = sum(r["seconds"] for r in records)
    if seconds <= 0:
        return {"seconds": 0.0, "flops_per_s": None, "tokens_per_s": None}
    with_tokens = [r for r in records if r.get("tokens") is not None]
    token_seconds = sum(r["seconds"] for r in with_tokens)
    return {"seconds": seconds, "flops_per_s": sum(r["flops"] for r in records) / seconds,
            "tokens_per_s": sum(r["tokens"] for r in with_tokens) / token_seconds if token_seconds > 0 else None}
