"""ProxyCommand: the SSH connection carried over a command's stdin and stdout, as OpenSSH runs it."""
from __future__ import annotations

import collections
import os
import select
import shlex
import socket
import subprocess
import threading

import paramiko

STDERR_LINES_KEPT = 5  # enough to say why a proxy gave up
EXIT_WAIT_S = 1.0  # a proxy whose output ended is given this long to exit and say with what code
STOP_WAIT_S = 2.0  # SIGTERM, then SIGKILL after this


class ProxyProcess(paramiko.ProxyCommand):
    """paramiko's ProxyCommand, started as ssh starts one (`$SHELL -c 'exec COMMAND'`, so pipes and
    variables work), whose end of output reads as a closed socket (paramiko's own waits out the banner
    timeout instead), with its stderr drained in the background and stopped by pid when closed."""

    def __init__(self, command: str):
        shell = os.environ.get("SHELL") or "/bin/sh"
        super().__init__(shlex.join([shell, "-c", f"exec {command}"]))  # split back by paramiko into this argv
        self.command = command
        self.stderr_tail: collections.deque = collections.deque(maxlen=STDERR_LINES_KEPT)
        self.drainer = threading.Thread(target=self._drain_stderr, name="proxy-stderr", daemon=True)
        self.drainer.start()

    def _drain_stderr(self) -> None:  # a proxy that writes much to stderr would block on a full pipe
        for line in self.process.stderr:
            text = line.decode(errors="replace").strip()
            if text:
                self.stderr_tail.append(text)

    def recv(self, size: int) -> bytes:
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        if not ready:
            raise socket.timeout()
        try:
            return os.read(self.process.stdout.fileno(), size)  # b"" once the proxy is gone: the link closed
        except OSError as exc:
            raise paramiko.ProxyCommandFailure(self.command, exc.strerror) from None

    def exit_status(self) -> int | None:
        """The proxy's exit code once it has ended (waiting a moment for it), else None."""
        try:
            return self.process.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            return None

    def failure(self) -> str | None:
        """Why the link through the proxy ended, when the proxy itself did."""
        code = self.exit_status()
        if code is None:
            return None
        self.drainer.join(EXIT_WAIT_S)  # its last words may still be in the pipe: read to its end first
        said = f": {self.stderr_tail[-1]}" if self.stderr_tail else ""
        return f"ProxyCommand `{self.command}` exited with {code}{said}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_WAIT_S)
        # its pipes stay open: paramiko's reader thread may be in select() on stdout, which now reads as ended
