"""A run's state in words, said one way by every command: `status` from the host's status.json, `stop` from what
it did, `offload runs` from meta.json (which keeps the same fields once the laptop has recorded the end), and the
line a run ends with. Pure functions on those dicts."""
from __future__ import annotations

import time

ENDED = ("exited", "lost", "failed")  # a run on its host in one of these states will not change any more
STOPPED_WAITING = "stopped while waiting"  # for the host's GPU lock: its job never started (remote_agent/supervisor.py)


def describe_status(status: dict) -> str:
    """The state of a run on its host, as `offload status` says it."""
    state = status.get("state")
    if state == "running":
        return f"running (pid {status.get('pid')}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(status['started_at']))})"
    if state == "waiting":
        holder = status.get("holder") or {}
        place = f", place {status['place']} in line" if status.get("place") else ""
        return f"waiting for the host's GPU (held by run {holder.get('run_id', '?')}{place})"
    if state == "exited" and status.get("stopped_waiting"):
        return f"{STOPPED_WAITING} for the host's GPU (it never started)"
    if state == "exited" and status.get("signal"):
        return f"killed by {status['signal']}"
    if state == "exited":
        return f"exited {status.get('exit_code')}"
    if state == "lost":
        return "lost (its supervisor died without recording an exit)"
    if state == "failed":
        return f"failed: {status.get('error')}"
    return state or "unknown"


def describe_stop(run_id: str, host: str, stopped: dict, status: dict | None = None) -> str:
    """What `stop` did (the agent's answer), in one line; `status`, the run's state afterwards, for a run that
    was no longer running."""
    if stopped.get("stopped_waiting"):
        return f"run {run_id} on {host} was {STOPPED_WAITING} for the host's GPU: it never started"
    if not stopped.get("signalled"):
        state = describe_status(status) if status else stopped.get("state")
        return f"run {run_id} on {host} was not running ({state}); nothing to stop"
    if stopped["signalled"] == "SIGKILL":
        return f"run {run_id} on {host} ignored SIGTERM for the grace period: sent SIGKILL to its process group"
    return f"sent SIGTERM to run {run_id}'s process group on {host}; it has ended"


def exit_text(meta: dict) -> str:
    """The `exit` cell of `offload runs`: the exit code, the signal that ended the job, or how it ended."""
    if meta.get("stopped_waiting"):
        return STOPPED_WAITING
    if meta.get("signal"):
        return meta["signal"]
    return "running?" if meta.get("exit_code") is None else str(meta["exit_code"])
