"""For a local run: how long the same work would take on each registered GPU host, from its peak and MFU."""
from __future__ import annotations

from offload.config import hosts, hoststate
from offload.config.resolve import resolve
from offload.mfu.device import plan_device
from offload.mfu.report import duration_text, percent, tflops_text
from offload.mfu.tracker import DEFAULT_GPU_MFU, estimate_seconds_on
from offload.runs.record import load_runs


def last_comparable_mfu(runs_found: list, host: str, script: str) -> float | None:
    """The MFU of the latest run of the same script on `host`, if one measured it."""
    for meta in reversed(runs_found):
        argv = meta.get("argv") or []
        if meta.get("host") == host and script in argv and meta.get("mfu") is not None:
            return meta["mfu"]
    return None


def gpu_estimates(meta: dict, args: list, script: str, project_root) -> list:
    """For a local run: how long the same work would take on each registered GPU host whose peak is known."""
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
