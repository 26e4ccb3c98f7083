"""A followed run's stdin: what `offload run` reads on its own stdin goes to the job (so `input()` works there),
through the agent that follows it (remote_agent/job_stdin.py has the host's side and the protocol).

One `stdin` message at a time: the next is sent once the agent answered `stdin_ok`, so nothing queues up behind
a job that does not read, and the agent is never handed two messages at once. Our EOF is the job's (`stdin_end`),
and so is a Ctrl-C that detaches. The descriptor is only ever read when it is readable, and never once the run is
no longer followed: in the link keeper, a read left waiting would take the next keystroke from the user's shell.
"""
from __future__ import annotations

import io
import os
import select
import sys
import threading
import time

from remote_agent import protocol

from offload.errors import OffloadError

CHUNK = 1 << 16
POLL_S = 0.1  # how soon a stopped forwarder notices it is stopped


class JobInput:
    """Forwards this process's stdin to the agent that follows the run, from attach() until stop()."""

    def __init__(self, fd: int | None = None):
        self.fd = stdin_descriptor() if fd is None else fd  # None: no stdin to read, EOF for the job at once
        self.agent, self.thread = None, None
        self.answered = threading.Event()
        self.stopped = threading.Event()
        self.ended = False  # the job's stdin is closed: our EOF sent, or the job reads no more
        self.finished = False  # stop() was called: never forwarded again, whatever a follower attaches later
        self.lock = threading.Lock()  # attach (a follower thread) against stop (the main thread, at Ctrl-C)

    def attach(self, agent) -> None:
        """The follow request (with stdin) was sent on `agent`: forward to it. A reconnect attaches again, to an
        agent that did not start the job: it answers `closed`, and forwarding ends."""
        with self.lock:
            self.halt()
            self.agent = agent
            if not self.ended and not self.finished:
                self.stopped.clear()
                self.thread = threading.Thread(target=self.forward, daemon=True)
                self.thread.start()

    def acknowledged(self, message: dict) -> None:
        """The agent's `stdin_ok` (the follower hears it among the output)."""
        if message.get("closed"):
            self.ended = True
        self.answered.set()

    def forward(self) -> None:
        try:
            while not self.stopped.is_set() and not self.ended:
                if self.fd is None:
                    raise OSError("no stdin")
                if not readable(self.fd, POLL_S):
                    continue
                data = os.read(self.fd, CHUNK)
                if not data:
                    self.end()
                    return
                self.answered.clear()
                self.agent.write(protocol.encode("stdin", size=len(data)) + data, flush=True)
                while not self.answered.wait(POLL_S):
                    if self.stopped.is_set():
                        return
        except OSError:  # our stdin cannot be read (closed): as its end
            self.end()
        except OffloadError:  # the link went: the follower says so, and a reconnect attaches again
            return

    def end(self) -> None:
        """The job's stdin ends: EOF here, or the run no longer followed."""
        if not self.ended and self.agent is not None:
            self.ended = True
            try:
                self.agent.send("stdin_end")
            except OffloadError:
                pass

    def halt(self) -> None:
        """Stop the forwarder (the lock held)."""
        self.stopped.set()
        self.answered.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join()
        self.thread = None

    def stop(self) -> None:
        """Following is over (ended, or Ctrl-C): stop reading, and end the job's stdin if it still runs."""
        with self.lock:
            self.finished = True
            self.halt()
        self.end()


def stdin_descriptor() -> int | None:
    try:
        return sys.stdin.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # closed, or replaced by one without a descriptor
        return None


def readable(fd: int, timeout: float) -> bool:
    """Input is waiting, and reading it will not stop us: `offload run ... &` in a shell must not be stopped
    (SIGTTIN) for reading the terminal its shell reads, so in the background we wait as the job does."""
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    except (OSError, ValueError):  # closed, or not a descriptor select takes: nothing to forward
        raise OSError("stdin cannot be read") from None
    return bool(ready) and not in_background(fd)


def in_background(fd: int) -> bool:
    """Whether fd is our controlling terminal and another process group has it (a terminal that is not ours
    to control, a pipe or a file never stops a reader)."""
    try:
        if os.tcgetpgrp(fd) != os.getpgrp():
            time.sleep(POLL_S)
            return True
    except OSError:
        pass
    return False
