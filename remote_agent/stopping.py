"""Stopping a run's job: SIGTERM to its whole process group, SIGKILL to what is left after a grace; and
whether a group a run recorded still runs that run's job (the kernel may have given its pgid to others since).
"""
from __future__ import annotations

import os
import signal
import time

from .run_status import METRICS, POLL_S, alive, read_status, signal_reaches


def stop(run_dir: str, grace: float) -> dict:
    """SIGTERM to the job's whole process group, SIGKILL to what is left after `grace` seconds; of a lost run
    too, while its recorded group is still its job. A run still waiting for the GPU lock has no job yet: its
    supervisor takes SIGTERM as "give up" and records the exit."""
    status = read_status(run_dir)
    if status["state"] == "waiting":
        status = stop_waiting(run_dir, status)
        if status["state"] != "running":  # else it took the lock as we asked: stop its job as any other
            return {"state": status["state"], "signalled": "SIGTERM" if status["state"] == "exited" else None,
                    "stopped_waiting": bool(status.get("stopped_waiting"))}
    orphaned = status["state"] == "lost" and bool(status.get("pgid")) and \
        run_group_alive(status["pgid"], status["run_dir"])  # its supervisor was killed, not its job
    if status["state"] != "running" and not orphaned:
        return {"state": status["state"], "signalled": None}
    pgid = status["pgid"]
    sent = "SIGTERM"
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return {"state": "exited", "signalled": None}
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(POLL_S)
    if group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
            sent = "SIGKILL"
        except ProcessLookupError:  # it ended between the look and the kill: SIGTERM did it
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and read_status(run_dir)["state"] == "running":
        time.sleep(POLL_S)
    return {"state": read_status(run_dir)["state"], "signalled": sent}


def stop_waiting(run_dir: str, status: dict) -> dict:
    try:
        os.kill(status["supervisor_pid"], signal.SIGTERM)
    except ProcessLookupError:
        return {**status, "state": "lost"}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and status["state"] == "waiting":
        time.sleep(POLL_S)
        status = read_status(run_dir)
        if status["state"] == "waiting" and not alive(status["supervisor_pid"]):
            return {**status, "state": "lost"}
    return status


def group_alive(pgid: int) -> bool:
    return signal_reaches(os.killpg, pgid) and any(alive(pid) for pid in group_members(pgid))


def run_group_alive(pgid: int, run_dir: str) -> bool:
    """Whether the process group a run recorded still runs that run's job: a member lives whose environment
    names the run's metrics file (job_env), so a pgid the kernel has since given to others never counts."""
    if not signal_reaches(os.killpg, pgid):
        return False
    own_metrics = f"OFFLOAD_METRICS={os.path.join(run_dir, METRICS)}".encode()

    def runs_the_job(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return own_metrics in f.read().split(b"\0") and alive(pid)
        except OSError:
            return False

    # The leader (pid == pgid) first: waiters ask this often, and a scan of /proc is only for a leader gone.
    return runs_the_job(pgid) or any(runs_the_job(pid) for pid in group_members(pgid) if pid != pgid)


def group_members(pgid: int) -> list:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(name))
    return members
