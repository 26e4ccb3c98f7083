"""`offload run`'s stdin reaches the job while it is followed (input() works), with EOF at its end and when
detached: on a host through the real sshd, on this machine, in-process and through the link keeper, under a
pipe and a real terminal."""
from __future__ import annotations

import json
import os
import pty
import signal
import time

import pytest

from conftest import run_offload, start_offload
from sshd_server import wait_for
from terminal import read_terminal, run_in_terminal

# Reads lines until EOF, saying each; then says EOF (a job whose stdin never ends would hang here).
ECHO = ("import sys\n"
        "print('ready', flush=True)\n"
        "for line in sys.stdin:\n"
        "    print('got', repr(line), flush=True)\n"
        "print('EOF', flush=True)\n")
ASK = "name = input('name? ')\nprint('hello', name)\n"


@pytest.fixture
def echo_project(project):
    (project / "echo.py").write_text(ECHO)
    (project / "ask.py").write_text(ASK)
    return project


@pytest.mark.parametrize("keep_alive", ["0", "600"])  # in its own process; through the link keeper
def test_a_pipe_reaches_the_job_on_the_host_then_eof(offload_home, box, echo_project, keep_alive):
    env = {"OFFLOAD_KEEP_ALIVE": keep_alive}
    for attempt in range(2):  # with the keeper: the first starts it, the second runs in it
        sent = "".join(f"line {attempt} {i} \u00fcber\n" for i in range(3)) + "no newline at the end"
        result = run_offload("run", "echo.py", cwd=echo_project, input=sent, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        got = [line for line in result.stdout.splitlines() if line.startswith("got ")]
        assert got == [f"got {line + chr(10)!r}" for line in sent.split("\n")[:-1]] + ["got 'no newline at the end'"]
        assert result.stdout.rstrip().endswith("EOF")
    assert (offload_home.path / "keeper.pid").exists() == (keep_alive != "0")  # the second ran in the keeper


def test_a_big_input_the_job_reads_slowly_arrives_whole(box, echo_project):
    (echo_project / "count.py").write_text(
        "import sys, time\ntime.sleep(1)\ndata = sys.stdin.buffer.read()\nprint('bytes', len(data), data.count(b'x'))\n")
    sent = "x" * (1 << 20)  # far more than a pipe holds: the agent must wait for the job, not drop or stall
    result = run_offload("run", "count.py", cwd=echo_project, input=sent, timeout=90)
    assert result.returncode == 0, result.stderr
    assert f"bytes {1 << 20} {1 << 20}" in result.stdout


def test_a_local_run_reads_the_pipe_too(offload_home, echo_project):
    result = run_offload("run", "echo.py", cwd=echo_project, input="only\n", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "running locally" in result.stderr or "this machine" in result.stderr
    assert "got 'only\\n'" in result.stdout and result.stdout.rstrip().endswith("EOF")


def test_a_detached_job_reads_eof_at_once(box, echo_project):
    result = run_offload("run", "--detach", "echo.py", cwd=echo_project, input="never read\n")
    assert result.returncode == 0, result.stderr
    meta = json.loads(next((echo_project / ".offload" / "runs").glob("*/meta.json")).read_text())
    host_log = f"{meta['run_dir']}/output.log"  # the host's run directory: a local path here
    assert wait_for(lambda: b"EOF" in open(host_log, "rb").read(), 20)
    assert b"got" not in open(host_log, "rb").read()


def test_a_job_that_never_reads_does_not_stall_its_output(box, echo_project):
    (echo_project / "deaf.py").write_text("import time\nfor i in range(5):\n    print('tick', i, flush=True)\n"
                                          "    time.sleep(0.2)\n")
    started = time.monotonic()
    result = run_offload("run", "deaf.py", cwd=echo_project, input="x" * (1 << 20), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "tick 4" in result.stdout and time.monotonic() - started < 30


@pytest.mark.parametrize("keep_alive", ["0", "600"])
def test_input_typed_at_a_terminal_reaches_the_job(offload_home, box, echo_project, keep_alive, monkeypatch):
    monkeypatch.setenv("OFFLOAD_KEEP_ALIVE", keep_alive)
    for _ in range(2):
        code, shown = run_in_terminal(["run", "ask.py"], b"alice\n", b"name? ", cwd=echo_project)
        assert code == 0, shown
        assert "hello alice" in shown
    assert (offload_home.path / "keeper.pid").exists() == (keep_alive != "0")


@pytest.mark.parametrize("keep_alive", ["0", "600"])
def test_ctrl_c_detach_ends_the_jobs_stdin_and_the_question_reads_the_terminal(box, echo_project, keep_alive):
    leader, follower = pty.openpty()
    proc = start_offload("run", "echo.py", cwd=echo_project, stdin=follower, stdout=follower, stderr=follower,
                         start_new_session=True, env={**os.environ, "OFFLOAD_KEEP_ALIVE": keep_alive})
    os.close(follower)
    try:
        seen = read_terminal(leader, 60, until=b"ready")
        os.write(leader, b"one\n")
        seen = read_terminal(leader, 30, seen, until=b"got 'one\\n'")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the terminal sends it
        seen = read_terminal(leader, 30, seen, until=b"[y/N]")
        os.write(leader, b"n\n")  # detach: the question has the answer, not the job
        assert proc.wait(timeout=30) == 130
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(leader)
    meta = json.loads(next((echo_project / ".offload" / "runs").glob("*/meta.json")).read_text())
    host_log = f"{meta['run_dir']}/output.log"
    assert wait_for(lambda: b"EOF" in open(host_log, "rb").read(), 20)  # detached: the job read EOF, and ended
    assert b"got 'n" not in open(host_log, "rb").read()
