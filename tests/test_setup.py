"""Setup before a job (offload.yaml's and hosts.yaml's `setup`), end to end against a real sshd: it runs when
its inputs changed, is skipped when they did not, and a failing setup stops the run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import HOLD, register_host, run_offload, start_offload
from offload.errors import OffloadError
from offload.config.project import parse
from offload.runs.record import load_runs
from offload.runs.setup import SetupPlan, setup_text, why_run
from sshd_server import wait_for


def reports(result) -> list:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def host_project_dir(box: dict) -> Path:
    (project_dir,) = [p for p in Path(box["workdir"]).iterdir() if p.name.startswith("proj-")]
    return project_dir


def run_ok(project: Path):
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 0, result.stderr
    assert len(reports(result)) == 1  # the job ran after the setup
    return result


def test_host_setup_runs_once_and_again_after_requirements_change(offload_home, sshd, project):
    box = register_host(offload_home, sshd, setup="echo setting up\necho ran >> setup-marker.txt")
    (project / "requirements.txt").write_text("numpy\n")

    first = run_ok(project)
    assert first.stdout.startswith("setting up\n")  # streamed to the terminal, before the job's output
    assert "setup on box runs: it has not succeeded in this project directory yet" in first.stderr
    marker = host_project_dir(box) / "setup-marker.txt"
    assert marker.read_text() == "ran\n"

    second = run_ok(project)
    assert "setting up" not in second.stdout
    (skipped,) = [line for line in second.stderr.splitlines() if "setup on box skipped" in line]
    assert "unchanged since" in skipped and "requirements.txt" in skipped
    assert marker.read_text() == "ran\n"

    (project / "requirements.txt").write_text("numpy\ntorch\n")
    third = run_ok(project)
    assert "setting up" in third.stdout
    assert "setup on box runs: changed: requirements.txt" in third.stderr
    assert marker.read_text() == "ran\nran\n"


def test_project_setup_keys_on_its_inputs_and_text(offload_home, sshd, project):
    box = register_host(offload_home, sshd, setup="echo host part >> order.txt")
    (project / "deps").mkdir()
    (project / "deps" / "a.txt").write_text("one\n")
    (project / "notes.md").write_text("draft\n")
    config = project / "offload.yaml"
    config.write_text("setup: echo project part >> order.txt\nsetup_inputs: [deps/*.txt]\n")

    run_ok(project)
    order = host_project_dir(box) / "order.txt"
    assert order.read_text() == "project part\nhost part\n"  # the project's setup first, then the host's

    (project / "notes.md").write_text("second draft\n")
    (project / "requirements.txt").write_text("numpy\n")  # not an input: setup_inputs replaces the defaults
    assert "setup on box skipped" in run_ok(project).stderr
    assert order.read_text().count("project part") == 1

    (project / "deps" / "a.txt").write_text("two\n")
    assert "setup on box runs: changed: deps/a.txt" in run_ok(project).stderr
    assert order.read_text().count("project part") == 2

    config.write_text("setup: echo project part v2 >> order.txt\nsetup_inputs: [deps/*.txt]\n")
    assert "setup on box runs: the setup command changed" in run_ok(project).stderr
    assert order.read_text().endswith("project part v2\nhost part\n")


def test_a_failing_setup_stops_the_run_and_is_tried_again(offload_home, sshd, project):
    register_host(offload_home, sshd, setup="echo boom\nexit 3\necho never")
    for attempt in range(2):  # nothing is recorded: the next run tries again
        result = run_offload("run", "report.py", cwd=project)
        assert result.returncode == 3
        assert result.stdout == "boom\n"  # its output, and the job's is absent: the job never started
        assert "offload: error: setup on box failed with exit code 3 (see its output above)" in result.stderr
        assert "it has not succeeded in this project directory yet" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (project / ".offload" / "runs").exists()  # no run was recorded either


def test_a_failing_first_line_fails_the_setup_though_the_last_succeeds(offload_home, sshd, project):
    box = register_host(offload_home, sshd, setup="false\necho ran anyway >> after-false.txt")
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 1, result.stderr  # sh -e: the first failing command ends the script
    assert "offload: error: setup on box failed with exit code 1" in result.stderr
    assert not reports(result) and not (host_project_dir(box) / "after-false.txt").exists()


def test_setup_uses_the_hosts_python_as_offload_python(offload_home, sshd, project):
    box = register_host(offload_home, sshd,
                        setup="$OFFLOAD_PYTHON -c 'import sys; open(\"python-used.txt\", \"w\").write(sys.executable)'")
    run_ok(project)
    assert (host_project_dir(box) / "python-used.txt").read_text() == box["python"]


def test_another_python_on_the_host_runs_the_setup_again(offload_home, sshd, project):
    box = register_host(offload_home, sshd, setup="echo ran >> setup-marker.txt")
    run_ok(project)
    other_python = str(Path(sys.executable).with_name("python3"))  # the same venv, by another path
    assert other_python != box["python"]
    register_host(offload_home, sshd, setup="echo ran >> setup-marker.txt", python=other_python)
    again = run_ok(project)
    assert f"setup on box runs: the python changed to {other_python}" in again.stderr
    assert (host_project_dir(box) / "setup-marker.txt").read_text() == "ran\nran\n"


def setup_statuses(box: dict) -> list:
    """status.json of each setup that started in the project's directory on the host."""
    setup_dirs = Path(box["workdir"]).glob("proj-*/.offload/setup/*")
    return [json.loads(f.read_text()) for f in (d / "status.json" for d in setup_dirs) if f.exists()]


def test_setup_waits_for_the_host_while_another_run_holds_it(offload_home, sshd, project, tmp_path):
    box = register_host(offload_home, sshd, setup="echo set up >> setup-marker.txt")
    holder_project = tmp_path / "holder"  # another project: only the host's lock stands between the two
    holder_project.mkdir()
    (holder_project / "hold.py").write_text(HOLD)
    release = tmp_path / "release"
    running = None
    try:
        assert run_offload("run", "--detach", "hold.py", str(release), cwd=holder_project).returncode == 0
        (holder,) = load_runs(holder_project)
        running = start_offload("run", "report.py", cwd=project)
        assert wait_for(lambda: [status.get("state") for status in setup_statuses(box)] == ["waiting"], 30), \
            setup_statuses(box)
        assert setup_statuses(box)[0]["holder"]["run_id"] == holder["run_id"]
        assert not (host_project_dir(box) / "setup-marker.txt").exists()  # it has not run meanwhile
        release.touch()
        assert running.wait(timeout=60) == 0
        stderr = running.stderr.read().decode()
    finally:
        release.touch()
        if running is not None:
            running.kill()
            running.wait()
    assert f"box is busy: run {holder['run_id']}" in stderr and "setup waits for it" in stderr
    assert (host_project_dir(box) / "setup-marker.txt").read_text() == "set up\n"


@pytest.mark.parametrize("text, line, problem", [
    ("setup: echo hi\nsetup_input: [a.txt]\n", 2, "unknown key 'setup_input'"),
    ("setup:\n  - pip install -r requirements.txt\n", 1, "setup must be a shell command"),
    ('setup: "echo hi\\0"\n', 1, "setup: 'echo hi\\x00' contains a NUL character"),  # the supervisor died of it
])
def test_a_bad_offload_yaml_is_one_line_with_file_and_line(box, project, text, line, problem):
    (project / "offload.yaml").write_text(text)
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("offload: error:")]
    assert f"offload.yaml:{line}: {problem}" in error
    assert "Traceback" not in result.stderr and not reports(result)


def test_a_local_run_skips_setup_and_says_so(offload_home, project):
    (project / "offload.yaml").write_text("setup: echo should not run\n")
    result = run_ok(project)
    assert "setup runs only on hosts" in result.stderr and "should not run" not in result.stdout


@pytest.mark.parametrize("text, line", [
    ("setup: [unclosed\n", 1),
    ("setup_inputs: deps/*.txt\n", 1),
    ("setup: ok\nsetup_inputs: [../outside.txt]\n", 2),
    ("- setup\n", 1),
])
def test_config_errors_name_the_line(text, line):
    with pytest.raises(OffloadError, match=rf"^offload\.yaml:{line}: "):
        parse(text, "offload.yaml")


def test_config_reads_both_keys():
    config = parse("setup: |\n  pip install -r requirements.txt\nsetup_inputs: [deps/*.txt]\n", "offload.yaml")
    assert config.setup == "pip install -r requirements.txt\n" and config.setup_inputs == ("deps/*.txt",)
    assert parse("", "offload.yaml").setup is None


def test_why_run_names_what_changed():
    plan = SetupPlan(setup_text("pip install -r requirements.txt", "echo host"), "/venv/bin/python",
                     {"requirements.txt": "aa"})
    assert plan.text == "pip install -r requirements.txt\necho host"
    assert why_run({"key": plan.key}, plan) is None
    assert why_run({}, plan) == "it has not succeeded in this project directory yet"
    other = SetupPlan(plan.text, "/usr/bin/python3", {"requirements.txt": "bb", "pyproject.toml": "cc"})
    from offload.runs.setup import state_of

    assert why_run(state_of(other), plan) == \
        "the python changed to /venv/bin/python; changed: pyproject.toml, requirements.txt"
