"""Ctrl-C while a run is followed: a local run is stopped; for a run on hosts, the person is asked whether to
stop it too (then it is followed to its end), and otherwise offload detaches and the run goes on."""
from __future__ import annotations

import os
import signal

from offload.console import ask_yes_no, interactive, say
from offload.runs.run_state import describe_stop

STOP_GRACE_S = 10.0  # SIGTERM to SIGKILL, for a run stopped from the laptop
INTERRUPTED_EXIT = 130  # as a shell reports a process that Ctrl-C ended


class StopOnInterrupt:
    """Ctrl-C during a local run stops the job (SIGTERM to its process group; a second Ctrl-C, SIGKILL), and the
    output is followed to the end so the log and the exit status are complete."""

    def __init__(self, run_id: str, pgid: int | None):
        self.run_id, self.pgid, self.presses = run_id, pgid, 0

    def handle(self, signum, frame):
        self.presses += 1
        say(f"stopping local run {self.run_id}" if self.presses == 1 else "killing it")
        if self.pgid:
            try:
                os.killpg(self.pgid, signal.SIGTERM if self.presses == 1 else signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def ask_to_stop(where: str) -> bool:
    """After Ctrl-C while following: in a terminal, whether to stop the run on `where` too (default no)."""
    return interactive() and ask_yes_no(f"\nstop the run on {where} too?")


def stop_when_asked(job, lock, status) -> bool:
    """Ctrl-C while a job (runs/job.py) is followed: in a terminal, ask (no output under the question, held by
    `lock`; `status`, the status line, cleared) whether to stop the run on every node too. True once it is
    stopped: follow it on to its end, what its SIGTERM handler prints and its exit. False when told no, with no
    terminal, or at a second Ctrl-C: the laptop stops following."""
    if job.stopping:
        return False
    job.asked = True
    with lock:
        status.clear()
        stop = ask_to_stop(job.where)
    if not stop:
        return False
    job.stopping = True
    job.record.update(stopped=True)
    for node in job.nodes:
        stopped = node.stop(STOP_GRACE_S)
        with lock:
            say(describe_stop(job.run_id, node.where, stopped))
    return True


def detached(job) -> int:
    """The laptop stopped following (Ctrl-C): the run goes on, or goes on ending, on its hosts."""
    run_id = job.run_id
    if job.stopping:
        say(f"run {run_id} is being stopped; `offload status {run_id}` says how it ended")
        return INTERRUPTED_EXIT
    job.record.update(detached=True)
    on = f"on {job.nodes[0].where}" if len(job.nodes) == 1 else "on its nodes"
    say(f"detached: run {run_id} goes on {on}; `offload logs {run_id} -f` follows it again")
    return INTERRUPTED_EXIT
