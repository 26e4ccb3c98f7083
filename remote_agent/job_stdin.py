"""A followed job's stdin: a fifo in its run directory, whose write end the agent that started the job holds.

The agent makes the fifo and opens its write end before the supervisor starts; the supervisor opens the read
end (without waiting for a writer) and gives it to the job as stdin. The laptop's `stdin` messages, sent while
it follows the run, are written into the fifo; the job reads EOF when the laptop's stdin ends (`stdin_end`),
when the follow ends (a detach, the link gone: the agent's end closes with it), or at once when nobody holds
the write end any more. A job that is not followed gets /dev/null, as before.
"""
from __future__ import annotations

import os

from .protocol import read_exactly

FIFO = "stdin.fifo"
writers = {}  # run dir -> the write end this agent holds for the job started there


def create(run_dir: str) -> None:
    """The fifo, and this agent's write end of it (kept in `writers` until a follow of the run hands it over)."""
    path = os.path.join(run_dir, FIFO)
    os.mkfifo(path, 0o600)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a write end opens only while a read end is open
    try:
        writers[run_dir] = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    finally:
        os.close(reader)


def open_for_job(run_dir: str) -> int:
    """The supervisor's read end, blocking for the job's reads; EOF at once when the agent's end is gone."""
    fd = os.open(os.path.join(run_dir, FIFO), os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    return fd


class Feeder:
    """The laptop's stdin into the job during one follow: each `stdin` message is answered `stdin_ok` once the
    fifo took all of it (or `closed`, once the job stopped reading), so the laptop never sends ahead and a job
    that does not read never stalls the follow."""

    def __init__(self, run_dir: str, inp, send):
        self.fd = writers.pop(run_dir, None)  # None: this agent did not start the run (a reconnect): EOF
        self.inp, self.send = inp, send
        self.pending, self.unanswered = b"", False

    def take(self, message: dict | None) -> bool:
        """Serve a message the laptop sent while following; False for any other (the agent serves it next)."""
        kind = message["t"] if message is not None else None
        if kind == "stdin":
            self.pending += b"".join(read_exactly(self.inp, int(message.get("size", 0))))
            self.unanswered = True
            self.drain()
            return True
        if kind == "stdin_end":
            self.close()
            return True
        return False

    def drain(self) -> None:
        if self.pending and self.fd is not None:
            try:
                self.pending = self.pending[os.write(self.fd, self.pending):]
            except BlockingIOError:  # the job is not reading now: the rest waits, the follow goes on
                return
            except BrokenPipeError:  # the job closed its stdin, or ended: what it did not read is dropped
                self.close()
        if self.unanswered and not self.pending:
            self.send("stdin_ok", closed=self.fd is None)
            self.unanswered = False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.pending = b""
