"""The agent's job control through a real agent process: detached start, status, stop, lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offload.transport.agent import start_local
from offload.errors import RemoteError
from procs import alive, group_members
from sshd_server import wait_for


@pytest.fixture
def agent():
    client = start_local()
    client.started_groups = []
    yield client
    client.close()
    for pgid in client.started_groups:  # whatever a test asserted, its jobs do not outlive it
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(agent, tmp_path: Path, *argv: str) -> tuple:
    run_dir = tmp_path / "run"
    started = agent.request("start", run_dir=str(run_dir), cwd=str(tmp_path), argv=list(argv), env={})
    if started.get("pgid"):
        agent.started_groups.append(started["pgid"])
    return run_dir, started


def test_stop_ends_the_job_and_everything_it_spawned(agent, tmp_path):
    # a shell that starts grandchildren, one of which ignores SIGTERM, as a stubborn dataloader might
    run_dir, started = start(agent, tmp_path, "sh", "-c", "sleep 300 & (trap '' TERM; sleep 300) & echo up; wait")
    assert started["state"] == "running"
    assert wait_for(lambda: len(group_members(started["pgid"])) >= 3, 10)
    stopped = agent.request("stop", run_dir=str(run_dir), grace=1)
    assert stopped["signalled"] == "SIGKILL"  # the trap outlived the grace period
    assert wait_for(lambda: group_members(started["pgid"]) == [], 5)
    status = agent.request("status", run_dir=str(run_dir))
    assert status["state"] == "exited" and status["signal"] in ("SIGTERM", "SIGKILL")


def test_status_reports_exit_code_and_times(agent, tmp_path):
    run_dir, started = start(agent, tmp_path, sys.executable, "-c", "import sys; sys.exit(7)")
    assert wait_for(lambda: agent.request("status", run_dir=str(run_dir))["state"] == "exited", 10)
    status = agent.request("status", run_dir=str(run_dir))
    assert status["exit_code"] == 7 and status["signal"] is None
    assert status["ended_at"] >= status["started_at"] > time.time() - 60


def test_a_killed_supervisor_makes_the_run_lost_not_running(agent, tmp_path):
    run_dir, started = start(agent, tmp_path, "sleep", "300")
    os.kill(started["supervisor_pid"], signal.SIGKILL)
    assert wait_for(lambda: agent.request("status", run_dir=str(run_dir))["state"] == "lost", 10)
    os.killpg(started["pgid"], signal.SIGKILL)
    assert wait_for(lambda: not alive(started["pid"]), 5)


def test_a_command_that_cannot_start_exits_127_with_the_reason_in_the_log(agent, tmp_path):
    run_dir, started = start(agent, tmp_path, "/nonexistent/python", "train.py")
    assert started["state"] == "exited" and started["exit_code"] == 127
    assert "cannot start /nonexistent/python" in (run_dir / "output.log").read_text()


def test_an_env_no_job_could_start_with_is_refused_before_anything_starts(agent, tmp_path):
    """execve(2) takes no '=' in a name and no NUL: the supervisor would have died of it, the laptop waiting 15 s."""
    for env in ({"A=B": "x"}, {"TOKEN": "ab\0c"}, {"N": 1}):
        started = time.monotonic()
        with pytest.raises(RemoteError, match="cannot reach a job") as refused:
            agent.request("start", run_dir=str(tmp_path / "run"), cwd=str(tmp_path), argv=["true"], env=env)
        assert refused.value.code == "bad_request" and time.monotonic() - started < 5
        assert not (tmp_path / "run").exists()


def test_a_supervisor_that_fails_before_its_job_is_reported_at_once_with_its_last_words(agent, tmp_path):
    """An argv with a NUL in it (no laptop sends one) makes the supervisor's Popen raise: said in one line, at once,
    rather than a start that waits 15 s for a status nobody will write."""
    started = time.monotonic()
    status = agent.request("start", run_dir=str(tmp_path / "run"), cwd=str(tmp_path), argv=["sh", "-c", "a\0b"], env={})
    assert time.monotonic() - started < 10
    assert (status["state"], status["error"]) == ("failed", "the supervisor failed: ValueError: embedded null byte")
    assert (tmp_path / "run" / "supervisor.err").read_text() == status["error"] + "\n"


def test_stop_of_a_lost_run_ends_its_jobs_whole_group(agent, tmp_path):
    run_dir, started = start(agent, tmp_path, "sh", "-c", "sleep 300 & sleep 300; wait")
    assert wait_for(lambda: len(group_members(started["pgid"])) == 3, 10)
    os.kill(started["supervisor_pid"], signal.SIGKILL)
    assert wait_for(lambda: agent.request("status", run_dir=str(run_dir))["state"] == "lost", 10)
    assert len(group_members(started["pgid"])) == 3  # the job runs on, unsupervised

    stopped = agent.request("stop", run_dir=str(run_dir), grace=1)
    assert (stopped["state"], stopped["signalled"]) == ("lost", "SIGTERM")
    assert wait_for(lambda: group_members(started["pgid"]) == [], 5)


def test_stop_of_a_lost_run_never_signals_a_group_that_is_not_its_job(agent, tmp_path):
    run_dir, started = start(agent, tmp_path, "sleep", "300")
    os.kill(started["supervisor_pid"], signal.SIGKILL)
    os.killpg(started["pgid"], signal.SIGKILL)
    assert wait_for(lambda: group_members(started["pgid"]) == [], 5)
    # as if the kernel had given the run's pgid to another process group since: a sleep in a session of its own
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        status_file = run_dir / "status.json"
        status_file.write_text(json.dumps({**json.loads(status_file.read_text()), "pgid": stranger.pid}))
        stopped = agent.request("stop", run_dir=str(run_dir), grace=1)
        assert (stopped["state"], stopped["signalled"]) == ("lost", None)
        assert alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait(timeout=5)
