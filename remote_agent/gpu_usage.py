"""The GPUs' own figures while a run is followed: utilisation, memory used of total, power, from nvidia-smi.

A Sampler runs nvidia-smi every SAMPLE_S on a thread of its own, one process at a time (never a second while one
is still running, however slow the driver answers), and keeps the latest sample for the follow to send. Where
there is no nvidia-smi (a CPU host) there is no sampler and no figure: nothing is made up.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading

from .facts import csv_rows

QUERY = "index,utilization.gpu,memory.used,memory.total,power.draw,power.limit"
SAMPLE_S = float(os.environ.get("OFFLOAD_GPU_SAMPLE_S") or 5.0)  # the environment's: tests sample faster
TIMEOUT_S = 10.0
FIELDS = {"index": "index", "utilization.gpu": "util_pct", "memory.used": "memory_used_mib",
          "memory.total": "memory_total_mib", "power.draw": "power_w", "power.limit": "power_limit_w"}


def parse_usage(text: str, query: str = QUERY) -> list:
    """One dict per GPU line of `nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`: the fields of
    FIELDS it holds, as numbers; None for "[N/A]", "[Not Supported]" and the like. A header names the columns
    (any order, other columns ignored); without one, `query` gives their order. Lines that do not fit: noise."""
    gpus = []
    for row in csv_rows(text, query):
        figures = {FIELDS[column]: number(value) for column, value in row.items() if column in FIELDS}
        if any(value is not None for key, value in figures.items() if key != "index"):
            gpus.append(figures)
    return gpus


def number(text: str | None) -> float | None:
    """"95 %", "745 MiB", "26.47 W", "95" -> the number; None ("[N/A]") -> None."""
    if text is None:
        return None
    found = re.fullmatch(r"(-?\d+(?:\.\d+)?)(?:\s*(?:%|MiB|W))?", text)
    return float(found.group(1)) if found else None


def sample_now() -> list | None:
    """The GPUs' figures now; None without nvidia-smi, or when it fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv"], capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return (parse_usage(done.stdout) or None) if done.returncode == 0 else None


class Sampler:
    """sample_now() every SAMPLE_S, one at a time; new() hands out each sample once."""

    def __init__(self, interval: float = SAMPLE_S):
        self.interval, self.latest, self.handed = interval, None, True
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self.run, name="gpu-sampler", daemon=True)

    @classmethod
    def started(cls):
        """A running sampler where this host has nvidia-smi, else None."""
        if shutil.which("nvidia-smi") is None:
            return None
        sampler = cls()
        sampler.thread.start()
        return sampler

    def run(self) -> None:
        while not self.stopping.is_set():
            sample = sample_now()
            if sample:
                with self.lock:
                    self.latest, self.handed = sample, False
            self.stopping.wait(self.interval)

    def new(self) -> list | None:
        with self.lock:
            if self.handed:
                return None
            self.handed = True
            return self.latest

    def stop(self) -> None:
        self.stopping.set()
