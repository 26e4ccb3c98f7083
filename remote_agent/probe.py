"""Run one of the agent's probe modules in a subprocess and read the JSON line it prints.

Probes import torch; in a subprocess, a broken or slow torch cannot take the agent down with it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

AGENT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json(module: str, *args: str, timeout: float, what: str) -> dict:
    """The probe's last stdout line as a dict, or {"error": ...} saying what went wrong."""
    try:
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=AGENT_ROOT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{what} took over {timeout:.0f} s"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{what} failed: {tail}"}
