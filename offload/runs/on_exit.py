"""The `on_exit:` hook of a run, as the start request carries it: offload.yaml's, else the host's (hosts.yaml),
run by node 0's supervisor only (one webhook a run), with the job's peak so the host can say its MFU."""
from __future__ import annotations

from offload.config import project as project_config


def on_exit_hook(job, node) -> dict | None:
    if node.rank != 0:
        return None
    text = project_config.load(job.root).on_exit or getattr(node.target, "on_exit", None)
    if not text:
        return None
    measurement = getattr(job, "measurement", None)
    return {"command": text, "peak_tflops": measurement.device.job_peak_tflops if measurement is not None else None}
