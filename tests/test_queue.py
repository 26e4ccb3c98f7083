"""The queue (issue 15, point 3), through the real CLI and a real sshd: runs queued from two laptops (two
registrations of the box, each with its own workdir and agent) start in the order they were submitted and never
overlap; one taken out of the line never runs; the line outlives every agent on the host killed -9;
`offload queue` shows it, and `--clear` takes out this laptop's runs only. The line itself
(remote_agent/waiting_line.py): numbers above every ticket even with its counter torn, a dead or pid-reused
ticket holds no place."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import register_host, run_offload
from procs import live_pids
from sshd_server import wait_for
from test_host_lock import TIMED_JOB, kill_run, laptops, start, timeline  # noqa: F401  (laptops: the fixture)
from test_run import run_records

from remote_agent import waiting_line

# A timed job that names the code it runs: version.txt as the project had it when the run was submitted.
VERSIONED_JOB = TIMED_JOB.replace("sys.argv[2],", "sys.argv[2] + '@' + open('version.txt').read(),")
HOLD = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)\n"


def make_project(root: Path) -> Path:
    root.mkdir()
    (root / "hold.py").write_text(HOLD)
    (root / "job.py").write_text(VERSIONED_JOB)
    return root


def queue_run(project: Path, host: str, *args: str) -> str:
    """`offload run --queue`: it returns at once, whatever waits; the run's id."""
    result = run_offload("run", "--queue", "--host", host, *args, cwd=project)
    assert result.returncode == 0, result.stderr
    found = re.search(r"(?:queued run|run) (\S+) (?:on|started on) ", result.stderr)
    assert found, result.stderr
    return found.group(1)


def host_status(project: Path, run_id: str) -> dict:
    meta = json.loads((project / ".offload" / "runs" / run_id / "meta.json").read_text())
    try:
        return json.loads((Path(meta["run_dir"]) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def kill_agents_under(directory: Path) -> list:
    """SIGKILL every agent (not a supervisor) working in a directory below `directory`: the laptops' links die."""
    killed = []
    for pid in live_pids():
        try:
            words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if b"remote_agent" in words and cwd.startswith(str(directory)):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def kill_runs(projects: list) -> None:
    for project in projects:
        for record in run_records(project) if (project / ".offload" / "runs").exists() else []:
            kill_run(Path(json.loads((record / "meta.json").read_text())["run_dir"]))


def test_queued_runs_from_two_laptops_start_in_submission_order_survive_killed_agents_and_never_overlap(
        offload_home, fresh_sshd, tmp_path):
    register_host(offload_home, fresh_sshd, name="box")
    register_host(offload_home, fresh_sshd, name="box2")  # the same account: one GPU lock, one line
    projects = [make_project(tmp_path / "a"), make_project(tmp_path / "b")]
    line_file, go = tmp_path / "timeline", tmp_path / "go"
    try:
        holder = queue_run(projects[0], "box", "hold.py", str(go))
        assert wait_for(lambda: host_status(projects[0], holder).get("state") == "running", 20)
        queued = []
        for i in range(5):  # each submitted with its own version of the code, which changes after it
            (projects[i % 2] / "version.txt").write_text(f"v{i}")
            queued.append(queue_run(projects[i % 2], ("box", "box2")[i % 2], "job.py", str(line_file), f"q{i}", "0.3"))
        assert [host_status(projects[i % 2], run)["place"] for i, run in enumerate(queued)] == [1, 2, 3, 4, 5]

        shown = run_offload("queue", "box2", cwd=projects[1])
        assert shown.returncode == 0, shown.stderr
        rows = [line.split() for line in shown.stdout.splitlines()[1:] if line.strip()]
        assert [(row[0], row[1]) for row in rows] == [("running", holder)] + [(str(place), run) for place, run
                                                                              in enumerate(queued, 1)], shown.stdout
        stopped = run_offload("stop", queued[2], cwd=projects[0])  # taken out of the line: it never runs
        assert stopped.returncode == 0, stopped.stderr
        assert wait_for(lambda: host_status(projects[0], queued[2]).get("stopped_waiting"), 10)
        # The host's sshd restarts and every agent of both laptops is killed -9: the line is on the host's disk.
        assert kill_agents_under(offload_home.path.parent) and fresh_sshd.kill_connections()
        fresh_sshd.process.terminate()
        fresh_sshd.process.wait(timeout=10)
        fresh_sshd.start()
        assert wait_for(lambda: host_status(projects[1], queued[3]).get("place") == 3, 10)  # q3 moved up
        shown = run_offload("queue", "box", cwd=projects[0])
        assert [line.split()[:2] for line in shown.stdout.splitlines()[1:]] == [["running", holder]] + \
            [[str(place), queued[i]] for place, i in enumerate((0, 1, 3, 4), 1)], shown.stdout + shown.stderr
        go.touch()
        for i, run in enumerate(queued):
            assert wait_for(lambda: host_status(projects[i % 2], run).get("state") == "exited", 30), run
    finally:
        go.touch()
        kill_runs(projects)
    times = timeline(tmp_path)
    order = ["q0@v0", "q1@v1", "q3@v3", "q4@v4"]  # in submission order, each with its own code; q2 never ran
    assert sorted(times, key=lambda name: times[name]["start"]) == order, times
    for earlier, later in zip(order, order[1:]):
        assert times[earlier]["end"] <= times[later]["start"], times
    assert [host_status(projects[i % 2], run)["exit_code"] for i, run in enumerate(queued) if i != 2] == [0] * 4


def test_clear_takes_out_this_laptop_s_waiting_runs_and_no_other_s(offload_home, sshd, tmp_path, laptops):
    register_host(offload_home, sshd)
    project = make_project(tmp_path / "a")
    go, line_file = tmp_path / "go", tmp_path / "timeline"
    lock = sshd.remote_home / ".offload" / "gpu.lock"  # HOST_LOCK, in the sessions' $HOME
    try:
        holder = queue_run(project, "box", "hold.py", str(go))
        assert wait_for(lambda: host_status(project, holder).get("state") == "running", 20)
        mine = [queue_run(project, "box", "job.py", str(line_file), f"mine{i}", "0.1") for i in range(2)]
        other_dir = tmp_path / "runs" / "theirs"  # another laptop's run, straight through an agent
        laptops[0].run_dirs.append(other_dir)
        other = laptops[0].request("start", run_dir=str(other_dir), cwd=str(project), env={}, run_id="theirs",
                                   argv=[sys.executable, "-c", TIMED_JOB, str(line_file), "theirs", "0.1"],
                                   lock=str(lock), laptop="another-laptop")
        assert (other["state"], other["place"]) == ("waiting", 3)
        cleared = run_offload("queue", "--clear", cwd=project)
        assert cleared.returncode == 0, cleared.stderr
        assert all(f"run {run} taken out of the line on box" in cleared.stderr for run in mine), cleared.stderr
        assert "theirs" in cleared.stdout and not any(run in cleared.stdout for run in mine), cleared.stdout
        go.touch()
        assert wait_for(lambda: laptops[0].request("status", run_dir=str(other_dir))["state"] == "exited", 30)
    finally:
        go.touch()
        kill_runs([project])
    assert set(timeline(tmp_path)) == {"theirs"}  # neither of mine ran
    assert all(host_status(project, run).get("stopped_waiting") for run in mine)


def test_queue_with_nothing_there_and_bad_combinations_are_one_line_each(offload_home, sshd, tmp_path):
    register_host(offload_home, sshd)
    project = make_project(tmp_path / "a")
    assert "box: nothing runs and nothing waits" in run_offload("queue", cwd=project).stderr
    for args, said in ((["--no-wait"], "--queue waits its turn and --no-wait gives up at once"),
                       (["--forward", "6006"], "--queue does not follow it")):
        result = run_offload("run", "--queue", *args, "job.py", cwd=project)
        assert result.returncode != 0 and said in result.stderr and "Traceback" not in result.stderr, result.stderr


# --- the line itself ------------------------------------------------------------------------------------------

def fake_supervisor(run_dir: str) -> subprocess.Popen:
    """A process whose command line is a supervisor's of run_dir, as the kernel shows it."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "remote_agent.supervisor",
                             run_dir])


def test_tickets_number_past_a_torn_counter_and_dead_or_reused_ones_hold_no_place(tmp_path):
    lock = str(tmp_path / "gpu.lock")
    alive_one, reused = fake_supervisor("/runs/a"), fake_supervisor("/runs/other")
    try:
        first = waiting_line.take_ticket(lock, {"run_id": "a", "run_dir": "/runs/a", "supervisor_pid": alive_one.pid})
        Path(waiting_line.line_dir(lock), "counter").write_text("garbage")  # torn by a power cut
        # b's supervisor died (its pid now some other run's supervisor): the ticket stands, but holds no place
        dead = waiting_line.take_ticket(lock, {"run_id": "b", "run_dir": "/runs/b", "supervisor_pid": reused.pid})
        third = waiting_line.take_ticket(lock, {"run_id": "c", "run_dir": "/runs/a", "supervisor_pid": alive_one.pid})
        assert [Path(path).name for path in (first, dead, third)] == \
            ["000000000001.json", "000000000002.json", "000000000003.json"]
        assert [entry["run_id"] for entry in waiting_line.waiting(lock)] == ["a", "c"]
        assert not Path(dead).exists()  # removed by the look that found it dead
        assert [entry["run_id"] for entry in waiting_line.ahead_of(third, lock)] == ["a"]
        waiting_line.leave(first)
        assert waiting_line.ahead_of(third, lock) == []
    finally:
        for proc in (alive_one, reused):
            proc.kill()
            proc.wait(timeout=10)


def test_a_killed_supervisor_s_ticket_lets_the_next_run_go(laptops, tmp_path):
    """The first waiter is killed -9 (no finally runs): the one behind it still starts once the lock is free."""
    (tmp_path / "project").mkdir()
    holder_dir, _ = start(laptops[0], tmp_path, "holder", 1.0)
    first_dir, first = start(laptops[0], tmp_path, "first", 0.1)
    second_dir, second = start(laptops[1], tmp_path, "second", 0.1)
    assert (first["state"], first["place"], second["state"], second["place"]) == ("waiting", 1, "waiting", 2)
    os.kill(first["supervisor_pid"], signal.SIGKILL)
    assert wait_for(lambda: laptops[1].request("status", run_dir=str(second_dir)).get("state") == "exited", 20)
    assert set(timeline(tmp_path)) == {"holder", "second"}
