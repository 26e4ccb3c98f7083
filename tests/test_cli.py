"""The entry points themselves: fast, light start-up and one-line errors."""
from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import run_offload


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
