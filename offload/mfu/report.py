"""What a run's numbers look like to a person: the live status line and the closing summary."""
from __future__ import annotations

import sys

from offload.console import add_plain_row
from offload.mfu.gpu_figures import figures_text

SOURCE_WORDS = {"metrics": "the script's metrics",
                "log": "its printed mfu, rescaled to this device from the A100 (312 TFLOPS) nanoGPT measures against",
                "model": "the model's FLOPs (nanoGPT's parameters and config) over each iteration's time; nanoGPT's "
                         "own mfu is of an A100's 312 TFLOPS"}
SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 12  # values of a run's loss kept in meta.json, one character each in `offload runs`
A100_NOTE = "nanoGPT's own mfu is of an A100's 312 TFLOPS"  # its lines, beside offload's figure for this device


def percent(fraction) -> str:
    return "n/a" if fraction is None else f"{fraction * 100:.1f}%"


def rate(tokens_per_s) -> str:
    if tokens_per_s is None:
        return "?"
    return f"{tokens_per_s / 1000:.1f}k" if tokens_per_s >= 1000 else f"{tokens_per_s:.0f}"


def status_text(status: dict | None) -> str:
    """'iter 120 | loss 2.3100 | 28.1k tok/s | MFU 12.3%' from the tracker's latest figures."""
    if not status or status.get("iter") is None:
        return ""
    parts = [f"iter {status['iter']}"]
    if status.get("loss") is not None:
        parts.append(f"loss {status['loss']:.4f}")
    if status.get("tokens_per_s") is not None:
        parts.append(f"{rate(status['tokens_per_s'])} tok/s")
    parts.append(f"MFU {percent(status.get('mfu'))}" + (f" ({A100_NOTE})" if status.get("a100") else ""))
    if status.get("gpu"):
        parts.append(figures_text(status["gpu"]))
    return " | ".join(parts)


def duration_text(seconds) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s")


def tflops_text(value) -> str:
    return "n/a" if value is None else (f"{value:.3g}" if value < 10 else f"{value:.1f}")


def summary_rows(measurement, meta: dict, wall_s: float | None) -> list:
    device = measurement.device
    mfu_text = percent(meta["mfu"]) if meta["mfu"] is not None else f"n/a ({meta['mfu_reason']})"
    if meta["mfu_source"]:
        source = "model" if meta.get("mfu_method") == "model" else meta["mfu_source"]
        mfu_text += f"  (from {SOURCE_WORDS[source]})"
    ceiling = measurement.ceiling.get("bf16" if device.dtype == "bf16" else "fp32")
    rows = [("device", device.label), ("precision", device.dtype),
            ("peak TFLOPS", f"{tflops_text(device.job_peak_tflops)}  ({device.peak.source})"),
            ("achieved TFLOPS", tflops_text(meta["achieved_tflops"])), ("MFU", mfu_text)]
    if meta["ceiling_fraction"] is not None:
        rows.append(("of measured ceiling", f"{percent(meta['ceiling_fraction'])} of {tflops_text(ceiling * device.count)} TFLOPS "
                                            "(offload hosts check --bench)"))
    time_per_iter = meta["time_per_iter_s"]
    rows += [("time per iteration", "?" if time_per_iter is None else f"{time_per_iter * 1000:.1f} ms"),
             ("tokens/s", rate(meta["tokens_per_s"])), ("wall time", duration_text(wall_s))]
    return rows + gpu_rows(meta)


def gpu_rows(meta: dict) -> list:
    """The GPUs' own figures over the run (mean and peak), where the host sampled them; none on a CPU host."""
    if not meta.get("gpu_samples"):
        return []
    rows = []
    if meta.get("gpu_util_mean") is not None:
        rows.append(("GPU utilisation", f"mean {meta['gpu_util_mean']:.0f}%, peak {meta['gpu_util_peak']:.0f}% "
                                        f"({meta['gpu_samples']} samples)"))
    if meta.get("gpu_memory_peak_mib") is not None:
        total = meta.get("gpu_memory_total_mib")
        rows.append(("GPU memory", f"peak {meta['gpu_memory_peak_mib'] / 1024:.1f}"
                                   + (f" of {total / 1024:.1f}" if total else "") + " GiB"))
    if meta.get("gpu_power_mean_w") is not None:
        limit = meta.get("gpu_power_limit_w")
        rows.append(("GPU power", f"mean {meta['gpu_power_mean_w']:.0f} W, peak {meta['gpu_power_peak_w']:.0f} W"
                                  + (f" (limit {limit:.0f} W)" if limit else "")))
    return rows


def print_summary(rows: list, extra: list = (), out=None) -> None:
    """Label and value, aligned; wrapped by rich to a terminal's width, plain lines (never padded) off one."""
    out = out or sys.stderr
    rows = list(rows) + list(extra)
    if not out.isatty():
        width = max((len(str(label)) for label, _ in rows), default=0)
        out.write("".join(f"  {str(label):<{width}}  {value}\n" for label, value in rows))
        out.flush()
        return
    from rich.console import Console  # lazy: rich is drawn only at a run's end, not at start-up
    from rich.table import Table  # lazy: as above

    table = Table(show_header=False, box=None, padding=(0, 2))
    for label, value in rows:
        add_plain_row(table, label, value)
    Console(file=out).print(table)


def loss_curve(losses: list, most: int = SPARK_WIDTH) -> list:
    """A run's losses averaged down to `most` values, for meta.json and the sparkline of `offload runs`."""
    values = [value for value in losses if value is not None]
    if len(values) <= most:
        return [round(value, 4) for value in values]
    return [round(sum(part) / len(part), 4) for part in
            (values[index * len(values) // most:(index + 1) * len(values) // most] for index in range(most))]


def sparkline(values) -> str:
    """▁▂▃▄▅▆▇█ from low to high: a loss falling from left to right."""
    values = [value for value in values or [] if isinstance(value, (int, float))]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low or 1.0
    return "".join(SPARK[round((value - low) / span * (len(SPARK) - 1))] for value in values)
