"""The measured matmul ceiling of the host's device (see matmul_probe.py)."""
from __future__ import annotations

from .probe import run_json

IMPORT_ALLOWANCE_S = 120  # importing torch and initialising CUDA on a cold host can take a while


def measure(seconds: float) -> dict:
    return run_json("remote_agent.matmul_probe", str(seconds), timeout=seconds + IMPORT_ALLOWANCE_S,
                    what="the matmul probe")
