"""One client of the keeper: its request and the stdin, stdout and stderr it passed along, the keeper's replies,
and, while its command runs, what the client says (Ctrl-C) or that it went away."""
from __future__ import annotations

import json
import os
import socket
import threading

from offload.keeper_client import PROTOCOL

REQUEST_READ_TIMEOUT_S = 10.0
REQUEST_MAX_BYTES = 16 << 20  # a request is an environment of a few kB: anything this big is no client of ours
STANDARD_STREAMS = 3  # the client passes its stdin, stdout and stderr, in that order


class ClientGone(BaseException):
    """Raised in a command whose client went away (killed, its terminal closed): the command stops as the client's
    own process would have, only its cleanups run. A BaseException, so no `except Exception` takes it for an error."""


class Session:
    """The connection to one `offload` process, from its request to its command's exit code."""

    def __init__(self, conn: socket.socket):
        self.conn, self.fds, self.request, self.rest = conn, [], None, b""
        self.lock = threading.Lock()  # between the main thread and the thread listening to the client
        self.gone, self.running, self.finished, self.interrupts = threading.Event(), False, False, 0

    def read_request(self) -> dict | None:
        """The client's request with its three descriptors, or None (and nothing kept) for anything else."""
        self.conn.settimeout(REQUEST_READ_TIMEOUT_S)
        try:
            data, self.fds, _flags, _address = socket.recv_fds(self.conn, 1 << 16, STANDARD_STREAMS)
            for fd in self.fds:
                os.set_inheritable(fd, False)  # the command's subprocesses get them as 0, 1 and 2 only
            while b"\n" not in data and data and len(data) < REQUEST_MAX_BYTES:
                more = self.conn.recv(1 << 16)
                data += more
                if not more:
                    break
            line, _, self.rest = data.partition(b"\n")
            request = json.loads(line)
        except (OSError, ValueError):
            return None
        self.conn.settimeout(None)
        if isinstance(request, dict) and request.get("v") == PROTOCOL and len(self.fds) == STANDARD_STREAMS:
            self.request = request
        return self.request

    def reply(self, message: dict) -> None:
        try:
            self.conn.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            self.gone.set()

    def listen(self, on_interrupt, on_gone) -> None:
        """From now until finish(): each Ctrl-C at the client calls on_interrupt() and its going away on_gone(),
        from a thread of their own, never once the command has finished."""
        threading.Thread(target=self._listen, args=(on_interrupt, on_gone), name="keeper-client", daemon=True).start()

    def _listen(self, on_interrupt, on_gone) -> None:
        try:
            for line in self.messages():
                if json.loads(line).get("interrupt"):
                    with self.lock:
                        self.interrupts += 1
                        if self.running:
                            on_interrupt()
        except (OSError, ValueError, AttributeError):  # AttributeError: a line that is not a JSON object
            pass
        with self.lock:
            if self.finished:
                return
            self.gone.set()
            on_gone()

    def messages(self):
        """The client's lines after its request; it sends nothing else, so their end is the client's going away."""
        pending = self.rest
        while True:
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                yield line
            data = self.conn.recv(4096)
            if not data:
                return
            pending += data

    def begin(self) -> bool:
        """The command starts now, unless Ctrl-C was pressed or the client went away before: then it never starts."""
        with self.lock:
            self.running = not self.interrupts and not self.gone.is_set()
            return self.running

    def end(self) -> None:
        with self.lock:
            self.running = False

    def finish(self, exit_code: int | None) -> None:
        """The command is over: its exit code to the client (None: the client went away), and the session closed."""
        with self.lock:
            self.running, self.finished = False, True
        if exit_code is not None:
            self.reply({"exit": exit_code})
        self.close()

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        try:
            self.conn.shutdown(socket.SHUT_RDWR)  # wakes the listening thread: its recv sees the end
        except OSError:
            pass
        self.conn.close()
