"""`python:` may be a venv's or a conda env's interpreter: `hosts check` says which kind it is."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import register_host, run_offload


def host_row(output: str, host: str) -> str:
    """The table row of one host in `hosts check` output (wide enough that no cell wraps)."""
    return next(line for line in output.splitlines() if f" {host} " in line)


def test_hosts_check_says_whether_python_is_a_venv_a_conda_env_or_the_system_one(offload_home, sshd, tmp_path):
    conda_env = tmp_path / "conda-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(conda_env)],
                   check=True, timeout=60)
    (conda_env / "conda-meta").mkdir()  # what marks a prefix as a conda environment
    base_python = str(Path(sys.base_prefix) / "bin" / "python3")
    register_host(offload_home, sshd, "venvbox")  # the tests' own interpreter: this project's .venv
    register_host(offload_home, sshd, "condabox", python=str(conda_env / "bin" / "python"))
    register_host(offload_home, sshd, "systembox", python=base_python)

    for name, kind in (("venvbox", "venv"), ("condabox", "conda"), ("systembox", "system")):
        result = run_offload("hosts", "check", name, env={"COLUMNS": "400"})
        row = host_row(result.stdout, name)
        assert f"{sys.version_info.major}.{sys.version_info.minor}" in row and f"({kind})" in row, result.stdout
