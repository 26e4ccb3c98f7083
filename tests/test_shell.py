"""`offload shell` under a real pty against a real sshd: a login shell in the synced project directory whose
`pwd` shows it, whose `exit 3` is offload's exit code, which sees the terminal's size and a resize of it, and
which names the run in OFFLOAD_RUN_ID when opened on one."""
from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from conftest import run_offload
from terminal import read_terminal
from test_sync import host_project_dir


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@contextlib.contextmanager
def open_shell(project: Path, *args: str, rows: int = 30, cols: int = 100):
    """`offload shell ARGS` on a pty of rows x cols: (process, the pty's controller); killed by pid if the test
    leaves it running."""
    controller, terminal = os.openpty()
    set_size(terminal, rows, cols)
    env = {**os.environ, "SHELL": "/bin/sh", "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-m", "offload", "shell", "--project", str(project), *args],
                               stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True, env=env,
                               preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(terminal)
    try:
        yield process, controller
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        os.close(controller)


def shell_value(controller: int, expression: str, tag: str) -> str:
    """What the host's shell makes of expression: printed between `<tag>=` and `;`, which the echo of the
    typed line never shows (it spells the `=` in octal). Typed again while unanswered: a login shell may
    discard what was typed before its first prompt."""
    marker, shown = f"{tag}=".encode(), b""
    for _ in range(10):
        os.write(controller, f"printf '{tag}\\075%s;\\n' \"{expression}\"\r".encode())
        try:
            shown = read_terminal(controller, 3, shown, until=marker)
            break
        except AssertionError:
            continue
    shown = read_terminal(controller, 30, shown, until=b";\r\n")
    return shown.split(marker)[-1].split(b";")[0].decode()


def test_a_shell_opens_in_the_project_and_its_exit_status_is_offloads(box, project):
    with open_shell(project) as (process, controller):
        where = shell_value(controller, "$(pwd)", "cwd")
        assert Path(where).resolve() == host_project_dir(box["workdir"], project).resolve()
        assert shell_value(controller, "${PATH%%:*}", "first") == os.path.dirname(sys.executable)
        assert shell_value(controller, "$(stty size)", "size") == "30 100"
        set_size(controller, 40, 120)
        time.sleep(0.3)  # the size is polled
        assert shell_value(controller, "$(stty size)", "resized") == "40 120"
        os.write(controller, b"exit 3\r")
        assert process.wait(timeout=30) == 3


def test_a_shell_on_a_run_names_it(box, project):
    done = run_offload("run", "--project", str(project), "report.py", cwd=project)
    assert done.returncode == 0, done.stderr
    run_id = next(path.name for path in (project / ".offload" / "runs").iterdir())
    with open_shell(project, "last") as (process, controller):
        assert shell_value(controller, "$OFFLOAD_RUN_ID", "run") == run_id
        os.write(controller, b"exit\r")
        assert process.wait(timeout=30) == 0


def test_without_a_terminal_it_says_to_use_exec(box, project):
    done = run_offload("shell", "--project", str(project))
    assert done.returncode != 0
    assert "needs a terminal" in done.stderr and "offload exec" in done.stderr and "Traceback" not in done.stderr
