"""Ctrl-C while a run is followed: a local run is stopped; for a run on hosts, the person is asked whether to
stop it too, and otherwise offload detaches and the run goes on."""
from __future__ import annotations

import os
import signal

from offload.console import ask_yes_no, interactive, say


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
