"""Show a run's output as it is printed, and keep it: bytes go to the terminal and to the local log."""
from __future__ import annotations

import sys

from .errors import OffloadError

SILENCE_LIMIT_S = 15  # the agent ticks every 2 s while the job is quiet; this much silence is a dead link


class TerminalAndLog:
    def __init__(self, log_path, terminal=None):
        self.log = open(log_path, "ab")
        self.terminal = terminal or sys.stdout.buffer

    def write(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()
        self.terminal.write(data)
        self.terminal.flush()

    def close(self) -> None:
        self.log.close()


def follow(agent, run_dir: str, offset: int, sink) -> dict:
    """Stream the run's log from `offset` into `sink` until the job ends; returns the exit message."""
    agent.send("follow", run_dir=run_dir, offset=offset)
    while True:
        message = agent.recv(timeout=SILENCE_LIMIT_S)
        kind = message["t"]
        if kind == "output":
            if message["offset"] != offset:
                raise OffloadError(f"output from {agent.label} arrived out of order (at {message['offset']}, expected {offset})")
            for piece in agent.read_blob(message["size"]):
                sink.write(piece)
                offset += len(piece)
        elif kind == "exit":
            return message
        elif kind != "tick":
            raise OffloadError(f"unexpected message from {agent.label} while following: {kind}")


def exit_code_of(exit_message: dict) -> int:
    """The shell's convention: the job's exit code, or 128 + signal number when a signal ended it."""
    import signal

    if exit_message.get("state") == "lost":
        return 1
    if exit_message.get("signal"):
        return 128 + int(signal.Signals[exit_message["signal"]])
    return int(exit_message.get("exit_code") or 0)
