"""Where a followed run's output goes. Every sink is a `Sink`: bytes of the host's output.log in order, and of
its metrics.jsonl, and how much of each it has (where following resumes after an outage).

RunOutput shows the output as it is printed and keeps it: bytes to the terminal and the local log, metrics lines
to metrics.jsonl, both, line by line, to an MFU tracker that feeds the status line. A node of a multi-node run
puts its name in front of each line (LinePrefixer); NodeOutput lets several followers share one terminal.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Protocol

from offload.mfu.report import status_text

CLEAR_LINE = "\r\x1b[K"


class Sink(Protocol):
    log_bytes: int      # how much of the host's output.log this sink has
    metrics_bytes: int  # and of its metrics.jsonl

    def write(self, data: bytes) -> None: ...
    def metrics(self, data: bytes) -> None: ...


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
            self.tracker.feed_output_lines(lines)
        if not self.partial:  # redraw only at a line's end, never in the middle of one
            self.redraw()

    def metrics(self, data: bytes) -> None:
        self.metrics_file.write(data)
        self.metrics_file.flush()
        if self.tracker is not None:
            self.tracker.feed_metrics_lines(data)
        self.redraw()

    def gpu(self, gpus: list) -> None:
        """A sample of the host's GPUs (remote_agent/gpu_usage.py): kept by the tracker, shown on the status line."""
        if self.tracker is not None:
            self.tracker.gpu.add(gpus)
        self.redraw()

    def redraw(self) -> None:
        if self.tracker is not None and not self.partial:
            self.status.show(status_text(self.tracker.status()))

    def close(self) -> None:
        self.status.clear()
        self.log.close()
        self.metrics_file.close()


class LinePrefixer:
    """Bytes in, whole lines out with a prefix: to the terminal, and to the run's combined output.log."""

    def __init__(self, prefix: bytes, terminal, combined=None):
        self.prefix, self.terminal, self.combined, self.partial = prefix, terminal, combined, b""

    def write(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if lines:
            text = b"".join(self.prefix + line + b"\n" for line in lines)
            self.terminal.write(text)
            if self.combined is not None:
                self.combined.write(text)

    def flush(self) -> None:
        self.terminal.flush()
        if self.combined is not None:
            self.combined.flush()

    def end(self) -> None:
        if self.partial:
            self.write(b"\n")


class NodeOutput:
    """One node's output: its own log (byte offsets for resuming) and prefixed lines for the user, under a
    lock shared by every node, so lines from different nodes never interleave."""

    def __init__(self, record_dir: Path, label: str | None, lock: threading.Lock, status, tracker=None, combined=None):
        """label None: the run's only node, whose output is the run's (record_dir itself, unprefixed); else
        record_dir/<label's first word>/, each line prefixed `[label] ` and written to `combined` as well."""
        node_dir = record_dir if label is None else record_dir / label.split()[0]
        node_dir.mkdir(parents=True, exist_ok=True)
        self.prefixer = None if label is None else LinePrefixer(f"[{label}] ".encode(), sys.stdout.buffer, combined)
        self.output = RunOutput(node_dir, tracker=tracker, terminal=self.prefixer, status=status)
        self.lock, self.closed = lock, False

    @property
    def log_bytes(self) -> int:
        return self.output.log_bytes

    @property
    def metrics_bytes(self) -> int:
        return self.output.metrics_bytes

    def write(self, data: bytes) -> None:
        with self.lock:
            if not self.closed:  # a follower still running after Ctrl-C has nowhere to write
                self.output.write(data)

    def metrics(self, data: bytes) -> None:
        with self.lock:
            if not self.closed:
                self.output.metrics(data)

    def gpu(self, gpus: list) -> None:
        with self.lock:
            if not self.closed:
                self.output.gpu(gpus)

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                if self.prefixer is not None:
                    self.prefixer.end()
                self.output.close()
