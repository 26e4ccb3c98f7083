"""A command under a real pseudo-terminal, as a person runs it: what it shows, and an answer typed at its prompt."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path


def run_in_terminal(args: list, answer: bytes, prompt: bytes, cwd: Path | None = None,
                    deadline_s: float = 60.0) -> tuple:
    """`python -m offload ARGS` on a pty, typing `answer` once `prompt` shows; (exit code, everything shown).
    The process is killed by pid if it outlives the deadline."""
    controller, terminal = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "offload", *args], cwd=cwd, stdin=terminal, stdout=terminal,
                               stderr=terminal, start_new_session=True)
    os.close(terminal)
    shown, answered = b"", False
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: every process has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if not answered and prompt in shown:
                os.write(controller, answer)
                answered = True
        return process.wait(timeout=max(deadline - time.monotonic(), 1)), shown.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        os.close(controller)


def read_terminal(controller: int, deadline_s: float, shown: bytes = b"", until: bytes | None = None) -> bytes:
    """What the pty shows, added to `shown`, until `until` is among it or (without `until`) every process has
    closed the terminal; the test fails when neither happens within deadline_s."""
    deadline = time.monotonic() + deadline_s
    while until is None or until not in shown:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the terminal showed no {until!r} within {deadline_s:.0f} s: {shown[-500:]!r}"
                                 if until else f"the terminal stayed open {deadline_s:.0f} s")
        ready, _, _ = select.select([controller], [], [], min(left, 0.5))
        if not ready:
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every process has closed the terminal
            chunk = b""
        if not chunk:
            if until is not None:
                raise AssertionError(f"the terminal closed before it showed {until!r}: {shown[-500:]!r}")
            break
        shown += chunk
    return shown
