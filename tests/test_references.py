"""Run references people can type (an id, its start, its last 4+ characters, `last`, `running`), and the project
found from a subdirectory as git finds a repository, through the real CLI against the real sshd."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import run_offload
from offload.runs.record import load_runs
from sshd_server import wait_for

HOLD_UNTIL = "import os, sys, time\nprint('up', flush=True)\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)\n"
WRITES_OUT = "import os\nos.makedirs('out', exist_ok=True)\nopen('out/result.txt', 'w').write('42\\n')\n"


def test_a_run_is_named_by_its_last_characters_and_the_running_one_by_running(box, project, tmp_path):
    (project / "writes.py").write_text(WRITES_OUT)
    (project / "hold.py").write_text(HOLD_UNTIL)
    assert run_offload("run", "report.py", cwd=project).returncode == 0
    assert run_offload("run", "writes.py", cwd=project).returncode == 0
    first, second = load_runs(project)

    by_suffix = run_offload("status", first["run_id"][-4:], cwd=project)  # the random part of the id
    assert by_suffix.returncode == 0 and by_suffix.stdout.startswith(first["run_id"]), by_suffix.stderr
    too_short = run_offload("status", second["run_id"][-3:], cwd=project)  # 3 characters name no suffix
    assert too_short.returncode == 1, too_short.stdout
    assert run_offload("status", second["run_id"][:-1], cwd=project).stdout.startswith(second["run_id"])

    none_running = run_offload("status", "running", cwd=project)
    assert none_running.returncode == 1
    assert f"no run is running (the last one, {second['run_id']}, has ended)" in none_running.stderr

    fetched = run_offload("fetch", cwd=project)  # RUN defaults to `last`, as for logs and status
    assert fetched.returncode == 0, fetched.stderr
    assert (project / ".offload" / "runs" / second["run_id"] / "files" / "out" / "result.txt").read_text() == "42\n"

    go = tmp_path / "go"
    try:
        assert run_offload("run", "--detach", "hold.py", str(go), cwd=project).returncode == 0
        held = load_runs(project)[-1]
        running = run_offload("status", "running", cwd=project)
        assert running.returncode == 0 and running.stdout.startswith(f"{held['run_id']} on box: running"), running
        stopped = run_offload("stop", "--grace", "2", cwd=project)  # RUN defaults to `last`
        assert stopped.returncode == 0 and "process group on box" in stopped.stderr, stopped.stderr
        assert wait_for(lambda: "running" not in run_offload("status", held["run_id"], cwd=project).stdout, 20)
    finally:
        go.touch()


def test_running_asks_the_hosts_and_names_several_running_runs(box, project, tmp_path):
    (project / "hold.py").write_text(HOLD_UNTIL)
    for _ in range(2):
        assert run_offload("run", "report.py", cwd=project).returncode == 0
    for meta in load_runs(project):  # as a laptop that died while following both would have left them
        path = project / ".offload" / "runs" / meta["run_id"] / "meta.json"
        path.write_text(json.dumps({**meta, "ended_at": None, "ended_unix": None, "exit_code": None}))
    ended = run_offload("logs", "running", cwd=project)  # the host knows better: both ended, and are recorded so
    assert ended.returncode == 1 and "no run is running" in ended.stderr, ended.stderr
    assert all(meta["exit_code"] == 0 and meta["ended_unix"] for meta in load_runs(project))

    go = tmp_path / "go"
    try:
        for _ in range(2):  # one holds the host, the other waits for it: both are running, as far as anyone can tell
            assert run_offload("run", "--detach", "hold.py", str(go), cwd=project).returncode == 0
        holding, waiting = load_runs(project)[-2:]
        several = run_offload("logs", "running", cwd=project)
        assert several.returncode == 1
        assert f"2 runs are running ({holding['run_id']}, {waiting['run_id']})" in several.stderr, several.stderr
    finally:
        go.touch()
