"""A run's MFU bookkeeping, from its first line to its summary: device and peak, tracker, recorded figures."""
from __future__ import annotations

from dataclasses import replace

from offload.mfu.device import measured_ceiling, plan_device, with_ceiling, with_dtype
from offload.mfu.hints import RunFacts, hints
from offload.mfu.report import loss_curve
from offload.mfu.tracker import MfuTracker


class RunMeasurement:
    """A run's MFU bookkeeping: its device and peak at the start, the tracker while it streams, the
    figures recorded in meta.json and printed at the end."""

    def __init__(self, facts: dict, args: list, nproc: int, override=None, ceiling: dict | None = None,
                 nodes: int = 1):
        """nodes > 1: a multi-node run of identical nodes (facts are node 0's): its peak is every node's."""
        self.facts, self.args, self.override, self.ceiling = facts, args, override, ceiling or {}
        self.nproc, self.nodes = nproc, nodes
        self.device = plan_device(facts, args, nproc, override)
        self.device = replace(self.device, count=self.device.count * nodes)
        self.tracker = MfuTracker(*self.peak_for(self.device.dtype), dtype=self.device.dtype,
                                  devices=self.device.count, peak_for=self.peak_for)

    def peak_for(self, dtype: str) -> tuple:
        """(job peak TFLOPS, source, reason) at `dtype`; switches the device's precision to it."""
        self.device = with_ceiling(with_dtype(self.device, dtype, self.facts, self.override), self.ceiling)
        peak = self.device.peak
        return self.device.job_peak_tflops, peak.source, None if peak.tflops else peak.source

    @classmethod
    def from_meta(cls, meta: dict) -> "RunMeasurement":
        """The measurement a run started with, from its meta.json (start_meta), for a run followed again."""
        return cls(meta.get("device_facts") or {}, meta.get("args") or [], meta.get("nproc") or meta.get("nproc_per_node") or 1,
                   meta.get("peak_override"), meta.get("ceiling"), nodes=max(1, len(meta.get("nodes") or [])))

    def replay(self, output: bytes, metrics: bytes) -> None:
        """Feed the tracker a whole run's output.log and metrics.jsonl, line by line as following fed them."""
        self.tracker.feed_output_lines(output.split(b"\n")[:-1])  # a last line without its newline was never fed
        self.tracker.feed_metrics_lines(metrics[:metrics.rfind(b"\n") + 1])

    def start_meta(self) -> dict:
        """The device and peak, and what they came from (for from_meta)."""
        return {"device": self.device.label, "device_kind": self.device.kind, "device_facts": self.facts,
                "dtype": self.device.dtype, "peak_tflops": self.device.job_peak_tflops, "nproc": self.nproc,
                "peak_override": self.override, "ceiling": self.ceiling}

    def end_meta(self) -> dict:
        summary = self.tracker.summary()
        return {"dtype": self.device.dtype, "peak_tflops": self.device.job_peak_tflops, "peak_source": self.device.peak.source,
                "mfu": summary["mfu"], "mfu_source": summary["source"], "mfu_method": summary.get("method"),
                "mfu_reason": summary.get("reason"),
                "achieved_tflops": summary["achieved_tflops"], "ceiling_fraction": self.ceiling_fraction(summary),
                "time_per_iter_s": summary["time_per_iter_s"], "tokens_per_s": summary["tokens_per_s"],
                "final_loss": summary["final_loss"], "iterations": summary["iterations"],
                "total_flops": summary["total_flops"], "loss_curve": loss_curve(self.losses()),
                **{key: value for key, value in summary.items() if key.startswith("gpu_")}}

    def losses(self) -> list:
        """The run's losses in order: its metrics' where it wrote any, else its log's."""
        tracker = self.tracker
        return [r.get("loss") for r in tracker.records] if tracker.records else [line["loss"] for line in tracker.log_lines]

    def ceiling_fraction(self, summary: dict) -> float | None:
        measured = measured_ceiling(self.ceiling, self.device.kind, self.device.dtype)
        if not measured or not summary["achieved_tflops"]:
            return None
        return summary["achieved_tflops"] / (measured * self.device.count)

    def hints(self, summary_meta: dict) -> list:
        return hints(RunFacts(args=self.args, device_kind=self.device.kind, host_has_cuda=bool(self.facts.get("gpus")),
                              compute_capability=self.device.compute_capability, dtype=self.device.dtype,
                              time_per_iter_s=summary_meta["time_per_iter_s"], mfu=summary_meta["mfu"],
                              tokens_per_iter=self.tracker.tokens_per_iter,
                              gpu_util_mean=summary_meta.get("gpu_util_mean")))
