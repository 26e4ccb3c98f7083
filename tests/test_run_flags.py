"""What users reach for on `offload run` and the command itself: --version, --env, -m, shell completion; through
the real CLI against the real sshd."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import register_host, run_offload
from offload import __version__

MODULE = ("import json, os, sys\n"  # one write of the whole line: two ranks sharing a pipe never interleave in it
          "os.write(1, (json.dumps({'name': __name__, 'spec': __spec__.name, 'argv': sys.argv[1:], 'cwd': os.getcwd()})"
          " + '\\n').encode())\n")


def reported(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def test_version_is_printed_and_exits_zero(offload_home):
    result = run_offload("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"offload {__version__}"


def test_env_flags_reach_the_job_over_the_hosts_env(offload_home, sshd, project):
    register_host(offload_home, sshd, env={"OFFLOAD_TEST_ENV": "from hosts.yaml"})
    report = reported(run_offload("run", "--env", "OFFLOAD_TEST_ENV=a=b c", "-e", "EXIT_CODE=0", "report.py", cwd=project))
    assert report["env"]["OFFLOAD_TEST_ENV"] == "a=b c"  # the first `=` splits; the value is kept whole
    assert report["env"]["PYTHONUNBUFFERED"] == "1"
    result = run_offload("run", "--env", "EXIT_CODE=3", "report.py", cwd=project)
    assert result.returncode == 3, result.stderr  # the job saw it: report.py exits with EXIT_CODE


def test_a_bad_env_flag_is_one_line_before_anything_runs(box, project):
    for flag, problem in (("NOEQUALS", "is not KEY=VALUE"), ("1X=2", "is not a variable name"), ("=v", "is not a variable name")):
        result = run_offload("run", "--env", flag, "report.py", cwd=project)
        assert result.returncode != 0
        assert problem in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (project / ".offload" / "runs").exists()  # refused before any run began


def test_dash_m_runs_a_module_of_the_project_on_the_host(box, project):
    (project / "pkg").mkdir()
    (project / "pkg" / "train.py").write_text(MODULE)
    report = reported(run_offload("run", "-m", "pkg.train", "--lr", "3", "a b", "--", cwd=project))
    assert report["name"] == "__main__" and report["spec"] == "pkg.train"  # as `python -m pkg.train` runs it
    assert report["argv"] == ["--lr", "3", "a b", "--"]
    assert report["cwd"].startswith(box["workdir"])  # on the host, in the synced project
    meta = json.loads(next((project / ".offload" / "runs").glob("*/meta.json")).read_text())
    assert meta["argv"][1:3] == ["-m", "pkg.train"] and meta["module"] is True


def test_dash_m_runs_locally_too_and_refuses_a_path(offload_home, project):
    (project / "pkg").mkdir()
    (project / "pkg" / "train.py").write_text(MODULE)
    report = reported(run_offload("run", "--module", "pkg.train", "x", cwd=project))  # no host: this machine
    assert report["spec"] == "pkg.train" and report["argv"] == ["x"]
    assert os.path.samefile(report["cwd"], project)
    result = run_offload("run", "-m", "pkg/train.py", cwd=project)
    assert result.returncode != 0 and "is not a module name" in result.stderr, result.stderr


def test_shell_completion_is_on(offload_home, tmp_path):
    shown = run_offload("--show-completion", "bash")
    assert shown.returncode == 0, shown.stderr
    assert "complete -o default -F _offload_completion offload" in shown.stdout
    # the protocol that script speaks, as bash would call it: the words so far, the word being completed
    completing = {"_OFFLOAD_COMPLETE": "complete_bash", "COMP_WORDS": "offload hosts s", "COMP_CWORD": "2"}
    completed = run_offload(env=completing)
    assert completed.returncode == 0, completed.stderr
    assert "set" in completed.stdout.split()
    installed = run_offload("--install-completion", "bash", env={"SHELL": "/bin/bash"})
    assert installed.returncode == 0, installed.stderr
    # a real bash, as a new terminal starts it: its ~/.bashrc sources the script, which completes `offload hosts s`
    command = tmp_path / "bin" / "offload"  # `offload` on PATH, running this checkout
    command.parent.mkdir()
    command.write_text(f"#!/bin/sh\nexec {sys.executable} -m offload \"$@\"\n")
    command.chmod(0o755)
    completed = subprocess.run(
        ["bash", "-c", "source ~/.bashrc; COMP_WORDS=(offload hosts s); COMP_CWORD=2; _offload_completion offload; "
                       "printf '%s\\n' \"${COMPREPLY[@]}\""],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "HOME": str(offload_home.home), "PATH": f"{command.parent}:{os.environ['PATH']}"})
    assert completed.returncode == 0, completed.stderr
    assert "set" in completed.stdout.split(), completed.stdout


def test_dash_m_under_torchrun_runs_the_module_on_every_rank(tmp_path):
    """The argv plan_launch gives -m with several processes, run for real: each rank runs the module."""
    from offload.runs.launch import plan_launch, plan_node_launch

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "train.py").write_text(MODULE.replace("'cwd'", "'rank': os.environ['RANK'], 'cwd'"))
    argv = plan_launch(sys.executable, "pkg.train", ["--", "x y"], 2, module=True)
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reports = sorted((json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")), key=lambda r: r["rank"])
    assert [(r["rank"], r["spec"], r["argv"]) for r in reports] == [("0", "pkg.train", ["--", "x y"]),
                                                                     ("1", "pkg.train", ["--", "x y"])]
    node_argv = plan_node_launch("python", "pkg.train", ["a"], 1, 2, 0, "h:1", "id", "h", module=True)
    assert node_argv[-4:] == ["--module", "--", "pkg.train", "a"]
