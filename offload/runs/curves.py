"""A run's curves for `offload plot`: loss, tokens/s and MFU at each logged iteration and at its training time,
from the laptop's copies of its metrics.jsonl (offload_metrics) or, for a plain nanoGPT run, its output.log.

The figures are the tracker's (mfu/tracker.py), so a plot says what the summary said: a metrics step's MFU is
its FLOPs over its seconds over the run's peak; a nanoGPT line's is its model FLOPs over that iteration's time
(or its printed mfu, rescaled). Training time adds up the steps' seconds (a log line stands for the
iterations since the one before it), so evaluation pauses are not in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from offload.mfu.report import percent
from offload.mfu.tracker import MfuTracker

MOST_POINTS = 400  # a curve is averaged down to this many points: a terminal shows fewer columns anyway


@dataclass
class Curve:
    label: str  # the legend: run, device, precision, MFU
    iters: list = field(default_factory=list)
    train_s: list = field(default_factory=list)  # training time at each point
    loss: list = field(default_factory=list)  # None where that step logged none
    tokens_per_s: list = field(default_factory=list)
    mfu: list = field(default_factory=list)  # fractions, None where unknown

    def __len__(self) -> int:
        return len(self.iters)


def run_curve(record_dir: Path, meta: dict) -> Curve:
    """The run's curve from the files this laptop has of it."""
    tracker = MfuTracker(peak_tflops=meta.get("peak_tflops"), devices=max(1, int(meta.get("nproc") or 1)))
    log, metrics = record_dir / "output.log", record_dir / "metrics.jsonl"
    if metrics.exists():
        tracker.feed_metrics_lines(metrics.read_bytes())
    if not tracker.records and log.exists():
        with open(log, "rb") as lines:
            for line in lines:
                tracker.feed_line(line.decode("utf-8", errors="replace").rstrip("\r\n"))
    points = metric_points(tracker) if tracker.records else log_points(tracker)
    return averaged(Curve(legend(meta), *map(list, zip(*points))) if points else Curve(legend(meta)))


def legend(meta: dict) -> str:
    where = meta.get("device") or meta.get("host") or "?"
    return f"{meta.get('run_id', '?')} on {where} ({meta.get('dtype') or '?'}, MFU {percent(meta.get('mfu'))})"


def metric_points(tracker: MfuTracker) -> list:
    """(iter, train_s, loss, tokens/s, mfu) for each metrics record."""
    points, train_s = [], 0.0
    for record in tracker.records:
        seconds = record["seconds"]
        train_s += seconds
        tokens = record.get("tokens")
        points.append((record["step"], train_s, record.get("loss"),
                       tokens / seconds if tokens is not None and seconds > 0 else None,
                       tracker.mfu_of(record["flops"] / seconds) if seconds > 0 else None))
    return points


def log_points(tracker: MfuTracker) -> list:
    """(iter, train_s, loss, tokens/s, mfu) for each nanoGPT-style iteration line."""
    points, train_s, last_iter = [], 0.0, None
    for line in tracker.log_lines:
        train_s += line["time_s"] * (line["iter"] - last_iter if last_iter is not None else 1)
        last_iter = line["iter"]
        tokens = tracker.tokens_per_iter
        points.append((line["iter"], train_s, line["loss"],
                       tokens / line["time_s"] if tokens and line["time_s"] > 0 else None,
                       tracker.mfu_of(tracker.line_flops_per_s(line))))
    return points


def averaged(curve: Curve, most: int = MOST_POINTS) -> Curve:
    """At most `most` points, each the mean of a run of consecutive ones (the last iteration of each run)."""
    count = len(curve)
    if count <= most:
        return curve
    out = Curve(curve.label)
    for index in range(most):
        lo, hi = index * count // most, (index + 1) * count // most
        out.iters.append(curve.iters[hi - 1])
        out.train_s.append(curve.train_s[hi - 1])
        for name in ("loss", "tokens_per_s", "mfu"):
            values = [value for value in getattr(curve, name)[lo:hi] if value is not None]
            getattr(out, name).append(sum(values) / len(values) if values else None)
    return out

