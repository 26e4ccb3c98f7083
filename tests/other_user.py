"""Another local user's processes (nobody, uid 65534), for tests of whom offload's keeper trusts.

Tests run as root (CI does), so a forked child that calls setuid(65534) is that user for real: the kernel, not
the test, says whose process is at the other end of a socket. Each child is stopped by its pid when its test
is done with it. A child never returns into pytest: it ends with os._exit.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import traceback
from pathlib import Path

NOBODY = 65534
READY_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0


def become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def in_child(body) -> int:
    """Fork; the child runs body() and exits (1 on any exception); the parent gets the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()  # onto the test's captured stderr, to say why the child failed
        finally:
            os._exit(code)
    return pid


def copy_until_eof(conn: socket.socket, log_fd: int) -> None:
    """Each chunk into log_fd as it arrives, until the other end closes or READ_TIMEOUT_S of silence."""
    conn.settimeout(READ_TIMEOUT_S)
    try:
        chunk = conn.recv(65536)
        while chunk:
            os.write(log_fd, chunk)
            chunk = conn.recv(65536)
    except OSError:  # the deadline: what came so far is what came
        pass


def stop_child(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


class ForeignListener:
    """Listens on the unix socket `path` as nobody and keeps every byte any client sends it in `log`.

    bound_by_us: root binds the socket file (so it is owned by us, where the keeper's would be) and only
    listen() runs as nobody, so nothing but the kernel's peer credentials gives it away. Otherwise nobody
    binds it, in a directory it owns (it reaches that directory through a cwd root gave it, as /tmp/pytest-of-root
    is closed to it).
    """

    def __init__(self, path: Path, log: Path, bound_by_us: bool = False):
        self.path, self.log, self.bound_by_us = path, log, bound_by_us

    def __enter__(self) -> "ForeignListener":
        self.log.write_bytes(b"")
        ready_read, ready_write = os.pipe()

        def listen() -> None:
            log = os.open(self.log, os.O_WRONLY | os.O_APPEND)
            os.chdir(self.path.parent)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if self.bound_by_us:
                listener.bind(self.path.name)
            become_nobody()
            if not self.bound_by_us:
                listener.bind(self.path.name)
            listener.listen(8)
            os.write(ready_write, b"r")
            while True:
                conn, _ = listener.accept()
                with conn:
                    copy_until_eof(conn, log)

        self.pid = in_child(listen)
        os.close(ready_write)
        try:
            ready, _, _ = select.select([ready_read], [], [], READY_TIMEOUT_S)
            started = bool(ready) and os.read(ready_read, 1) == b"r"
        finally:
            os.close(ready_read)
        if not started:
            stop_child(self.pid)
            raise RuntimeError(f"the foreign listener on {self.path} did not start")
        return self

    def received(self) -> bytes:
        return self.log.read_bytes()

    def __exit__(self, *exc) -> None:
        stop_child(self.pid)


def send_as_nobody(socket_path: Path, request: dict, reply_log: Path, timeout_s: float = 20.0) -> int:
    """Connect to socket_path as nobody, send request as the keeper's client would, keep what comes back in
    reply_log; the child's exit status (0: it connected; 1: it could not, with why on stderr)."""
    import time

    reply_log.write_bytes(b"")

    def send() -> None:
        log = os.open(reply_log, os.O_WRONLY | os.O_APPEND)
        os.chdir(socket_path.parent)  # root enters the directory; nobody only needs the socket itself
        become_nobody()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(socket_path.name)
            try:
                sock.sendall(json.dumps(request).encode() + b"\n")  # and stays, as a client does, for the reply
            except OSError:  # closed on it already (EPIPE): refused, which the reply log shows as empty
                return
            copy_until_eof(sock, log)

    pid = in_child(send)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    stop_child(pid)
    raise TimeoutError(f"the foreign client of {socket_path} did not finish in {timeout_s} s")
