"""What a run's numbers look like to a person: the live status line, the closing summary, `offload runs`."""
from __future__ import annotations

import sys

from offload.runs.record import duration_s, load_runs


SOURCE_WORDS = {"metrics": "the script's metrics", "log": "its printed mfu, rescaled to this device"}


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
    parts.append(f"MFU {percent(status.get('mfu'))}")
    return " | ".join(parts)


def duration_text(seconds) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s")


def print_runs(project_root) -> int:
    found = load_runs(project_root)
    if not found:
        print(f"offload: no runs recorded in {project_root}/.offload/runs", file=sys.stderr)
        return 0
    from rich.table import Table

    from offload.cli.hosts import add_plain_row, table_console

    table = Table("run", "host", "device", "duration", "exit", "final loss", "MFU", box=None)
    for meta in found:
        exit_text = "running?" if meta.get("exit_code") is None else str(meta["exit_code"])
        if meta.get("signal"):
            exit_text = meta["signal"]
        loss = meta.get("final_loss")
        add_plain_row(table, meta["run_id"], meta.get("host", "?"), meta.get("device") or "?", duration_text(duration_s(meta)), exit_text,
                      "?" if loss is None else f"{loss:.4f}", percent(meta.get("mfu")))
    table_console().print(table)
    return 0


class RunMeasurement:
    """A run's MFU bookkeeping: its device and peak at the start, the tracker while it streams, the
    figures recorded in meta.json and printed at the end."""

    def __init__(self, facts: dict, args: list, nproc: int, override=None, ceiling: dict | None = None,
                 nodes: int = 1):
        """nodes > 1: a multi-node run of identical nodes (facts are node 0's): its peak is every node's."""
        from dataclasses import replace

        from offload.mfu.device import plan_device
        from offload.mfu.tracker import MfuTracker

        self.facts, self.args, self.override, self.ceiling = facts, args, override, ceiling or {}
        self.device = plan_device(facts, args, nproc, override)
        self.device = replace(self.device, count=self.device.count * nodes)
        self.tracker = MfuTracker(*self.peak_for(self.device.dtype), dtype=self.device.dtype,
                                  devices=self.device.count, peak_for=self.peak_for)

    def peak_for(self, dtype: str) -> tuple:
        """(job peak TFLOPS, source, reason) at `dtype`; switches the device's precision to it."""
        from offload.mfu.device import with_dtype

        self.device = with_dtype(self.device, dtype, self.facts, self.override)
        peak = self.device.peak
        return self.device.job_peak_tflops, peak.source, None if peak.tflops else peak.source

    def start_meta(self) -> dict:
        return {"device": self.device.label, "device_kind": self.device.kind, "device_facts": self.facts,
                "dtype": self.device.dtype, "peak_tflops": self.device.job_peak_tflops}

    def end_meta(self) -> dict:
        summary = self.tracker.summary()
        return {"dtype": self.device.dtype, "peak_tflops": self.device.job_peak_tflops, "peak_source": self.device.peak.source,
                "mfu": summary["mfu"], "mfu_source": summary["source"], "mfu_reason": summary.get("reason"),
                "achieved_tflops": summary["achieved_tflops"], "ceiling_fraction": self.ceiling_fraction(summary),
                "time_per_iter_s": summary["time_per_iter_s"], "tokens_per_s": summary["tokens_per_s"],
                "final_loss": summary["final_loss"], "iterations": summary["iterations"],
                "total_flops": summary["total_flops"]}

    def ceiling_fraction(self, summary: dict) -> float | None:
        measured = self.ceiling.get("bf16" if self.device.dtype == "bf16" else "fp32")
        if not measured or not summary["achieved_tflops"] or self.ceiling.get("device") != self.device.kind:
            return None
        return summary["achieved_tflops"] / (measured * self.device.count)

    def hints(self, summary_meta: dict) -> list:
        from offload.mfu.tracker import RunFacts, hints

        return hints(RunFacts(args=self.args, device_kind=self.device.kind, host_has_cuda=bool(self.facts.get("gpus")),
                              compute_capability=self.device.compute_capability, dtype=self.device.dtype,
                              time_per_iter_s=summary_meta["time_per_iter_s"], mfu=summary_meta["mfu"],
                              tokens_per_iter=self.tracker.tokens_per_iter))


def tflops_text(value) -> str:
    return "n/a" if value is None else (f"{value:.3g}" if value < 10 else f"{value:.1f}")


def summary_rows(measurement: RunMeasurement, meta: dict, wall_s: float | None) -> list:
    device = measurement.device
    mfu_text = percent(meta["mfu"]) if meta["mfu"] is not None else f"n/a ({meta['mfu_reason']})"
    if meta["mfu_source"]:
        mfu_text += f"  (from {SOURCE_WORDS[meta['mfu_source']]})"
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
    return rows


def print_summary(rows: list, extra: list = (), out=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from offload.cli.hosts import add_plain_row

    table = Table(show_header=False, box=None, padding=(0, 2))
    for label, value in list(rows) + list(extra):
        add_plain_row(table, label, value)
    Console(file=out or sys.stderr, width=160 if not (out or sys.stderr).isatty() else None).print(table)


def last_comparable_mfu(runs_found: list, host: str, script: str) -> float | None:
    """The MFU of the latest run of the same script on `host`, if one measured it."""
    for meta in reversed(runs_found):
        argv = meta.get("argv") or []
        if meta.get("host") == host and script in argv and meta.get("mfu") is not None:
            return meta["mfu"]
    return None


def gpu_estimates(meta: dict, args: list, script: str, project_root) -> list:
    """For a local run: how long the same work would take on each registered GPU host whose peak is known."""
    from offload.config import hosts, hoststate
    from offload.mfu.device import plan_device
    from offload.mfu.tracker import DEFAULT_GPU_MFU, estimate_seconds_on
    from offload.config.resolve import resolve

    if not meta.get("total_flops"):
        return []
    registry = hosts.load()
    history = load_runs(project_root)
    rows = []
    for name, entry in registry.hosts.items():
        override = resolve(name, entry, ssh_config={}).peak_tflops
        facts = hoststate.get(name).get("device") or {}
        if not facts.get("gpus"):
            if override is None:
                continue  # never seen (or no GPU), no peak_tflops: its peak is not known
            facts = {"gpus": [{"name": f"the GPU of {name}", "compute_capability": "8.0"}]}  # peak from hosts.yaml
        device = plan_device(facts, [a for a in args if not a.startswith("--device=")], 1, override)
        if not device.peak.tflops:
            continue
        measured = last_comparable_mfu(history, name, script)
        mfu = measured or DEFAULT_GPU_MFU
        seconds = estimate_seconds_on(meta["total_flops"], device.peak.tflops, mfu)
        basis = f"its last run of {script}" if measured else "assumed: no earlier run of this script there"
        rows.append((f"on {name} (estimate)", f"{duration_text(seconds)} of compute: {device.name}, "
                                              f"{tflops_text(device.peak.tflops)} TFLOPS {device.dtype} at {percent(mfu)} MFU ({basis})"))
    if not rows and registry.hosts:
        rows.append(("on a GPU host", "no estimate yet: `offload hosts check NAME` once, so its GPU is known"))
    return rows
