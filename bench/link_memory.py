"""Peak memory of offload's side of a sync, for issue 14's target (< 200 MB, laptop and host).

Sampled from /proc while the sync runs: the laptop's is the highest VmHWM (the kernel's own peak RSS) of the
`offload` command and of the link keeper that ran it (its pid file); the host's, of the agents (their command
lines name remote_agent). The host shares this machine's /proc, namespaced network or not.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

SAMPLE_S = 0.05
AGENT_MARK = b"remote_agent"


def peak_kib(pid: int) -> int:
    """VmHWM of pid in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def keeper_pid(pid_file: Path) -> int | None:
    """The pid a link keeper wrote, or None when none runs."""
    try:
        return int(pid_file.read_text())
    except (OSError, ValueError):
        return None


def agent_pids() -> list:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                    if AGENT_MARK in cmdline.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


class PeakMemory:
    """Samples, from start() to stop(), the laptop's and the host's peaks in bytes."""

    def __init__(self, command_pid: int, keeper_pid_file: Path):
        self.command_pid, self.keeper_pid_file = command_pid, keeper_pid_file
        self.laptop = self.host = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while True:
            laptop_pids = [self.command_pid, keeper_pid(self.keeper_pid_file)]
            self.laptop = max([self.laptop] + [peak_kib(pid) << 10 for pid in laptop_pids if pid])
            self.host = max([self.host] + [peak_kib(pid) << 10 for pid in agent_pids()])
            if self.done.wait(SAMPLE_S):
                return

    def start(self) -> "PeakMemory":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
