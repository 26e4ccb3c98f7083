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


def test_running_with_several_unended_runs_names_them(box, project):
    for _ in range(2):
        assert run_offload("run", "report.py", cwd=project).returncode == 0
    for meta in load_runs(project):  # as a laptop that died while following both would have left them
        path = project / ".offload" / "runs" / meta["run_id"] / "meta.json"
        path.write_text(json.dumps({**meta, "ended_at": None, "ended_unix": None, "exit_code": None}))
    first, second = load_runs(project)
    several = run_offload("logs", "running", cwd=project)
    assert several.returncode == 1
    assert f"2 runs are running ({first['run_id']}, {second['run_id']})" in several.stderr


def test_a_run_from_a_subdirectory_uses_the_project_root_and_the_script_from_here(box, project, tmp_path):
    subprocess.run(["git", "init", "-q", str(project)], check=True, timeout=30)
    (project / "pkg").mkdir()
    (project / "pkg" / "train.py").write_text("import os, sys\nprint(os.getcwd())\nprint(sys.argv[0])\n")
    (tmp_path / "outside.py").write_text("print('no')\n")

    result = run_offload("run", "train.py", cwd=project / "pkg")
    assert result.returncode == 0, result.stderr
    cwd, script = result.stdout.splitlines()
    (meta,) = load_runs(project)  # recorded at the root, not in pkg/
    assert not (project / "pkg" / ".offload").exists()
    assert meta["script"] == script == "pkg/train.py" and cwd == meta["project_dir"]

    # .offload/ was made with a .gitignore of `*`: run records never show in `git status`
    assert (project / ".offload" / ".gitignore").read_text().splitlines()[-1] == "*"
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
                            capture_output=True, text=True, timeout=30, check=True).stdout
    assert ".offload" not in status and "pkg/train.py" in status

    listed = run_offload("runs", cwd=project / "pkg")
    assert meta["run_id"] in listed.stdout
    assert run_offload("status", "last", cwd=project / "pkg").stdout.startswith(meta["run_id"])

    outside = run_offload("run", "../../outside.py", cwd=project / "pkg")
    lines = [line for line in outside.stderr.splitlines() if line.strip()]
    assert outside.returncode == 1 and len(lines) == 1
    assert f"script ../../outside.py is outside the project {project}" in lines[0]


def test_the_nearest_marker_wins_and_none_means_the_current_directory(box, tmp_path):
    outer = tmp_path / "outer"
    inner = outer / "inner"
    (inner / "deep").mkdir(parents=True)
    (outer / ".git").mkdir()
    (inner / "offload.yaml").write_text("data_budget: 1MB\n")
    (inner / "deep" / "report.py").write_text("print('hi')\n")
    assert run_offload("run", "report.py", cwd=inner / "deep").returncode == 0
    assert [meta["script"] for meta in load_runs(inner)] == ["deep/report.py"]
    assert not (outer / ".offload").exists()

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "report.py").write_text("print('hi')\n")
    assert run_offload("run", "report.py", cwd=bare).returncode == 0
    assert [meta["script"] for meta in load_runs(bare)] == ["report.py"]


def test_a_records_dir_offload_did_not_make_is_left_as_it_is(box, project):
    (project / ".offload").mkdir()
    assert run_offload("run", "report.py", cwd=project).returncode == 0
    assert not (project / ".offload" / ".gitignore").exists() and len(load_runs(project)) == 1
