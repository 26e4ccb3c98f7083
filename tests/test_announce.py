"""Word when a followed run ends (issue 15, point 4): a bell on the terminal, under a real pty, and a desktop
notification naming the exit, the wall time, the final loss and the MFU, through whatever notify-send is first on
PATH (here a stand-in that writes down what it was asked to show: the desktop is the one thing not real)."""
from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

from conftest import run_offload
from terminal import run_in_terminal

NANOGPT_LINES = ("import sys\n"
                 "print('iter 0: loss 4.2000, time 12.00ms, mfu 0.01%', flush=True)\n"
                 "print('iter 1: loss 2.5000, time 11.00ms, mfu 0.01%', flush=True)\n"
                 "sys.exit(3)\n")


def stand_in_notifier(directory: Path) -> Path:
    """A notify-send that appends its arguments, one per line, to shown.txt beside it."""
    directory.mkdir()
    script = directory / "notify-send"
    script.write_text(f"#!/bin/sh\nfor arg in \"$@\"; do printf '%s\\n' \"$arg\"; done >> {directory / 'shown.txt'}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory / "shown.txt"


def test_a_followed_run_that_ends_notifies_with_exit_wall_time_loss_and_mfu(box, project, tmp_path):
    (project / "train.py").write_text(NANOGPT_LINES)
    shown = stand_in_notifier(tmp_path / "bin")
    env = {"PATH": f"{shown.parent}{os.pathsep}{os.environ['PATH']}", "OFFLOAD_KEEP_ALIVE": "0"}
    result = run_offload("run", "train.py", cwd=project, env=env)
    assert result.returncode == 3, result.stderr
    deadline = time.monotonic() + 10  # the notifier runs beside offload's exit
    while not shown.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    title, body = shown.read_text().splitlines()[-2:]
    assert title.startswith("offload: run ") and title.endswith(" exited 3")
    assert body.startswith("box: exit 3, ") and "loss 2.5000" in body and "MFU " in body
    assert "\a" not in result.stderr  # not a terminal: no bell


def test_without_a_notifier_a_run_ends_as_before(box, project, tmp_path):
    (project / "train.py").write_text(NANOGPT_LINES)
    bare = tmp_path / "bare"
    bare.mkdir()
    os.symlink(sys.executable, bare / "python3")
    result = run_offload("run", "train.py", cwd=project, env={"PATH": str(bare), "OFFLOAD_KEEP_ALIVE": "0"})
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr


def test_a_terminal_hears_a_bell_when_the_run_ends(box, project):
    code, shown = run_in_terminal(["run", "report.py"], b"", b"\0never asked", cwd=project)
    assert code == 0, shown
    assert "\a" in shown.split('"argv"')[-1]  # after the job's own output
