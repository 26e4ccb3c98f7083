"""The GPUs' own figures over a run (remote_agent/gpu_usage.py samples them on the host): the latest, for the
status line, and their mean and peak, for the summary and meta.json. Utilisation is the GPUs' mean; memory and
power are all of the node's GPUs together. Pure bookkeeping on plain data."""
from __future__ import annotations


def node_figures(gpus: list) -> dict:
    """One sample of a node's GPUs as one set of figures (None where none of them says)."""
    def known(key):
        return [gpu[key] for gpu in gpus if isinstance(gpu.get(key), (int, float))]

    utils = known("util_pct")
    sums = {key: (sum(known(key)) if known(key) else None)
            for key in ("memory_used_mib", "memory_total_mib", "power_w", "power_limit_w")}
    return {"util_pct": sum(utils) / len(utils) if utils else None, "gpus": len(gpus), **sums}


class GpuFigures:
    def __init__(self):
        self.samples = []  # node_figures of each sample, in arrival order

    def add(self, gpus: list) -> None:
        if gpus:
            self.samples.append(node_figures(gpus))

    @property
    def latest(self) -> dict | None:
        return self.samples[-1] if self.samples else None

    def summary(self) -> dict:
        """gpu_util_mean/peak (%), gpu_memory_peak_mib, gpu_memory_total_mib, gpu_power_mean/peak_w and
        gpu_power_limit_w, gpu_samples; empty without samples (a CPU host)."""
        if not self.samples:
            return {}

        def values(key):
            return [sample[key] for sample in self.samples if sample[key] is not None]

        def mean(key):
            return sum(values(key)) / len(values(key)) if values(key) else None

        def peak(key):
            return max(values(key)) if values(key) else None

        return {"gpu_samples": len(self.samples), "gpu_util_mean": mean("util_pct"), "gpu_util_peak": peak("util_pct"),
                "gpu_memory_peak_mib": peak("memory_used_mib"), "gpu_memory_total_mib": peak("memory_total_mib"),
                "gpu_power_mean_w": mean("power_w"), "gpu_power_peak_w": peak("power_w"),
                "gpu_power_limit_w": peak("power_limit_w")}


def figures_text(figures: dict | None) -> str:
    """'GPU 87% · 10.2/12.0 GiB · 215 W' from node_figures (parts left out where unknown)."""
    if not figures:
        return ""
    parts = []
    if figures.get("util_pct") is not None:
        parts.append(f"GPU {figures['util_pct']:.0f}%")
    if figures.get("memory_used_mib") is not None:
        total = figures.get("memory_total_mib")
        parts.append(f"{figures['memory_used_mib'] / 1024:.1f}" + (f"/{total / 1024:.1f}" if total else "") + " GiB")
    if figures.get("power_w") is not None:
        parts.append(f"{figures['power_w']:.0f} W")
    return " · ".join(parts)
