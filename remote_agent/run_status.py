"""A run directory on the host and what it says of its job: the supervisor writes it, the agent only reads it.

The job runs under a supervisor process in a session of its own (see supervisor.py), which writes
output.log and status.json in the run directory. The agent only reads them, so the agent (and the SSH
link it lives on) can die at any moment without touching the job.
"""
from __future__ import annotations

import json
import os
import time

from . import host_dirs, supervisor_error
from .protocol import RequestError

STATUS = "status.json"
LOG = "output.log"
JOB = "job.json"
SUPERVISOR_STDERR = "supervisor-stderr.log"  # the supervisor's stderr (and systemd-run's): why one died before its job began;
#                                              its own one-line failure note is supervisor_error.py's supervisor.err
METRICS = "metrics.jsonl"  # written by the job itself (see lib/offload_metrics.py), when it wants to
POLL_S = 0.05  # how often a wait on a run's processes or files looks again
LIVE_STATES = ("starting", "waiting", "running")  # waiting: for the host's GPU lock (see supervisor.py)
ENDED_STATES = ("exited", "busy")  # recorded by the supervisor itself; "lost" and "failed" are inferred


def now() -> float:
    return round(time.time(), 3)


def signal_reaches(kill, target: int) -> bool:
    """Whether a process (os.kill) or process group (os.killpg) exists, by sending signal 0."""
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def alive(pid: int) -> bool:
    if not signal_reaches(os.kill, pid):
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_status(run_dir: str) -> dict:
    run_dir = host_dirs.absolute(run_dir, "a run directory")
    if not os.path.isdir(run_dir):
        raise RequestError("no_such_run", f"no run directory {run_dir} on the host")
    try:
        with open(os.path.join(run_dir, STATUS)) as f:
            status = json.load(f)
    except (FileNotFoundError, ValueError):
        status = {"state": "starting"}
    if status["state"] in ("running", "waiting") and not alive(status["supervisor_pid"]):
        status["state"] = "lost"  # the supervisor was killed: nobody will record an exit code
    if status["state"] not in ENDED_STATES:  # the supervisor failed before it could record an end
        error = supervisor_error.read(run_dir)
        if error is not None:
            status.update(state="failed", error=error)
    status["run_dir"] = run_dir
    return status
