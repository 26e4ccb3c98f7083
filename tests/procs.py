"""Processes as /proc shows them, for tests that check what a run left behind (nothing, it must be)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from offload.transport.agent import start_local


def stat_fields(pid: int) -> list | None:
    """The fields of /proc/PID/stat after the command name (state first), or None when there is no such pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running or sleeping: a zombie waiting for its parent to reap it is dead here."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def stop_by_pid(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after grace_s; returns once pid is gone (or a zombie another process reaps)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not alive(pid):
            return


def live_pids() -> list:
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and alive(int(name))]


def processes_mentioning(text: str) -> list:
    """Live processes (other than this one) whose command line holds text."""
    found = []
    for pid in live_pids():
        if pid != os.getpid():
            try:
                if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
    return found


def group_members(pgid: int) -> list:
    """Live processes of a process group."""
    return [pid for pid in live_pids() if (stat_fields(pid) or [None, None, None])[2] == str(pgid)]


def descendants(pid: int) -> list:
    """Live children, grandchildren, ... of pid."""
    children = {}
    for child in live_pids():
        fields = stat_fields(child)
        if fields:
            children.setdefault(int(fields[1]), []).append(child)
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@pytest.fixture
def local_agent():
    """A real agent process, as the local fallback runs it; closed, and checked gone, afterwards."""
    client = start_local()
    try:
        yield client
    finally:
        client.close()  # EOF, then a 5 s deadline, then SIGKILL to the agent's pid
        assert not alive(client.hello["pid"])
