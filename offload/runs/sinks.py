"""Show a run's output as it is printed, and keep it: bytes go to the terminal and to the local log,
metrics lines to metrics.jsonl, and both, line by line, to an MFU tracker that feeds the status line."""
from __future__ import annotations

import json
import sys

from offload.errors import OffloadError

SILENCE_LIMIT_S = 15  # the agent ticks every 2 s while the job is quiet; this much silence is a dead link
CLEAR_LINE = "\r\x1b[K"


class StatusLine:
    """One line at the bottom of the terminal (stderr), redrawn below the job's output; off elsewhere."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = getattr(self.stream, "isatty", lambda: False)()
        self.shown = False

    def show(self, text: str) -> None:
        if self.enabled and text:
            self.stream.write(CLEAR_LINE + text)
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self.shown = False


class RunOutput:
    """Where a followed run's bytes go."""

    def __init__(self, record_dir, tracker=None, terminal=None, status: StatusLine | None = None):
        self.log = open(record_dir / "output.log", "ab")
        self.metrics_file = open(record_dir / "metrics.jsonl", "ab")
        self.terminal = terminal or sys.stdout.buffer
        self.tracker = tracker
        self.status = status or StatusLine()
        self.partial = b""

    @property
    def log_bytes(self) -> int:
        """How much of the host's output.log the laptop has: where following resumes."""
        return self.log.tell()

    @property
    def metrics_bytes(self) -> int:
        return self.metrics_file.tell()

    def write(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()
        self.status.clear()
        self.terminal.write(data)
        self.terminal.flush()
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if self.tracker is not None:
            for line in lines:
                self.tracker.feed_line(line.decode("utf-8", errors="replace").rstrip("\r"))
        if not self.partial:  # redraw only at a line's end, never in the middle of one
            self.redraw()

    def metrics(self, data: bytes) -> None:
        self.metrics_file.write(data)
        self.metrics_file.flush()
        if self.tracker is not None:
            for line in data.splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a malformed line is the script's problem, not a reason to stop watching
                if isinstance(record, dict):
                    self.tracker.feed_metrics(record)
        self.redraw()

    def redraw(self) -> None:
        if self.tracker is not None and not self.partial:
            from offload.mfu.report import status_text

            self.status.show(status_text(self.tracker.status()))

    def close(self) -> None:
        self.status.clear()
        self.log.close()
        self.metrics_file.close()


def follow(agent, run_dir: str, offset: int, sink, metrics_offset: int = 0, until_now: bool = False) -> dict:
    """Stream the run's log from `offset` into `sink` until the job ends (returns the `exit` message), or
    with until_now only up to what the host has now (returns an `eof` message with the run's status)."""
    agent.send("follow", run_dir=run_dir, offset=offset, metrics_offset=metrics_offset, until_now=until_now)
    while True:
        message = agent.recv(timeout=SILENCE_LIMIT_S)
        kind = message["t"]
        if kind in ("output", "metrics"):
            expected = offset if kind == "output" else metrics_offset
            if message["offset"] != expected:
                raise OffloadError(f"{kind} from {agent.label} arrived out of order (at {message['offset']}, expected {expected})")
            data = b"".join(agent.read_blob(message["size"]))
            if kind == "output":
                sink.write(data)
                offset += len(data)
            else:
                sink.metrics(data)
                metrics_offset += len(data)
        elif kind in ("exit", "eof"):
            return message
        elif kind != "tick":
            raise OffloadError(f"unexpected message from {agent.label} while following: {kind}")


def exit_code_of(exit_message: dict) -> int:
    """The shell's convention: the job's exit code, or 128 + signal number when a signal ended it."""
    import signal

    if exit_message.get("state") in ("lost", "failed"):  # failed: the supervisor, not the job (see its error)
        return 1
    if exit_message.get("signal"):
        return 128 + int(signal.Signals[exit_message["signal"]])
    return int(exit_message.get("exit_code") or 0)
