"""The entry points themselves: fast, light start-up and one-line errors."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import register_host, run_offload


def imported_modules(*args: str) -> str:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "offload", *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_help_imports_neither_torch_nor_paramiko(offload_home):
    for args in (["--help"], ["run", "--help"], ["hosts", "list"]):
        modules = {line.split("|")[-1].strip().split(".")[0] for line in imported_modules(*args).splitlines()
                   if line.startswith("import time:")}
        assert "offload" in modules
        assert "torch" not in modules and "paramiko" not in modules, args


def test_console_script_and_module_entry_point_agree(offload_home):
    script = shutil.which("offload", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script, "the console script `offload` is installed next to the venv's python"
    by_script = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    by_module = run_offload("--help")
    assert by_script.returncode == by_module.returncode == 0
    assert "run" in by_script.stdout and by_script.stdout == by_module.stdout


def test_usage_errors_exit_non_zero_without_traceback(offload_home):
    result = run_offload("run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = run_offload("run", "--nproc-per-node", "0", "x.py")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_missing_script_is_one_line(offload_home, project):
    result = run_offload("run", "nope.py", cwd=project)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope.py not found" in lines[0]


def test_script_excluded_by_ignore_rules_is_refused_before_connecting(box, project):
    (project / ".gitignore").write_text("report.py\n")
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 1
    assert "would not be synced" in result.stderr and ".gitignore:1" in result.stderr


@pytest.mark.parametrize("env, problem", [
    ({"A=B": "x"}, "env name 'A=B' is not a variable name"),
    ({"TOKEN": "ab\0c"}, "env.TOKEN contains a NUL character"),
])
def test_an_env_no_job_can_start_with_is_refused_at_load(offload_home, sshd, project, env, problem):
    """Such a variable once reached the host, where the job's supervisor died of it (execve takes neither) and
    the run waited for a job that never started. Now it is one line naming hosts.yaml's line, and nothing runs."""
    register_host(offload_home, sshd, env={"OK": "1", **env})
    hosts_file = offload_home.path / "hosts.yaml"
    name = next(iter(env))
    yaml_lines = hosts_file.read_text().splitlines()
    line = next(number for number, text in enumerate(yaml_lines, 1) if text.lstrip().startswith(name))
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"offload: error: {hosts_file}:{line}: host box: {problem}"), lines
    assert not (project / ".offload").exists()
