"""`hosts add` checks the host's python and torch; `hosts set` edits a host in place: real CLI, real sshd."""
from __future__ import annotations

import stat
import sys
import venv

import pytest
import yaml

from conftest import register_host, run_offload


def add_args(name: str, server, *extra: str) -> list:
    return ["hosts", "add", name, f"{server.user}@{server.host}", "--port", str(server.port),
            "--identity", str(server.client_key_path), "--yes", *extra]


def read_hosts(offload_home) -> dict:
    return yaml.safe_load((offload_home.path / "hosts.yaml").read_text())["hosts"]


def test_add_says_the_python_it_found(offload_home, sshd):
    result = run_offload(*add_args("box", sshd, "--python", sys.executable))
    assert result.returncode == 0, result.stderr
    assert f"python on box: {sys.executable} (" in result.stderr
    assert "no torch" not in result.stderr


def test_add_refuses_a_wrong_python_unless_forced(offload_home, sshd):
    result = run_offload(*add_args("box", sshd, "--python", "/nonexistent/python"))
    assert result.returncode == 1
    assert "box not added: python not found on box at /nonexistent/python" in result.stderr, result.stderr
    assert "--force" in result.stderr and "Traceback" not in result.stderr
    assert not (offload_home.path / "hosts.yaml").exists()
    forced = run_offload(*add_args("box", sshd, "--python", "/nonexistent/python", "--force"))
    assert forced.returncode == 0, forced.stderr
    assert "saved anyway (--force)" in forced.stderr
    assert read_hosts(offload_home)["box"]["python"] == "/nonexistent/python"


def test_add_warns_of_a_python_without_torch(offload_home, sshd, tmp_path):
    bare = tmp_path / "bare-venv"  # a real interpreter that has no torch: a venv without site packages
    venv.create(bare, with_pip=False)
    result = run_offload(*add_args("box", sshd, "--python", str(bare / "bin" / "python")))
    assert result.returncode == 0, result.stderr
    assert f"warning: no torch in {bare / 'bin' / 'python'} on box" in result.stderr, result.stderr
    assert "offload hosts set box python PATH" in result.stderr


def test_set_edits_a_host_in_place_and_keeps_the_rest(offload_home, sshd, project):
    register_host(offload_home, sshd, name="first")
    register_host(offload_home, sshd, name="box", workdir="/nowhere/yet", env={"KEEP": "me"})
    before = read_hosts(offload_home)["box"]
    done = run_offload("hosts", "set", "box", "workdir", str(offload_home.path.parent / "remote-set"))
    assert done.returncode == 0, done.stderr
    assert run_offload("hosts", "set", "box", "gpus", "2").returncode == 0
    secret = run_offload("hosts", "set", "box", "env.OFFLOAD_TEST_ENV", "s3cret: yes")
    assert secret.returncode == 0 and "s3cret" not in secret.stderr  # a token is never echoed
    after = read_hosts(offload_home)
    assert list(after) == ["first", "box"]  # the order (the default host) is unchanged
    assert after["box"] == {**before, "workdir": str(offload_home.path.parent / "remote-set"), "gpus": 2,
                            "env": {"KEEP": "me", "OFFLOAD_TEST_ENV": "s3cret: yes"}}
    assert stat.S_IMODE((offload_home.path / "hosts.yaml").stat().st_mode) == 0o600
    assert not list(offload_home.path.glob(".hosts.yaml.*"))  # no temporary file left beside it
    ran = run_offload("run", "--host", "box", "--nproc-per-node", "1", "report.py", cwd=project)
    assert ran.returncode == 0, ran.stderr
    assert "remote-set" in ran.stdout and '"OFFLOAD_TEST_ENV": "s3cret: yes"' in ran.stdout


def test_set_default_makes_the_host_first(offload_home, sshd):
    register_host(offload_home, sshd, name="first")
    register_host(offload_home, sshd, name="box")
    done = run_offload("hosts", "set", "box", "--default")
    assert done.returncode == 0, done.stderr
    assert list(read_hosts(offload_home)) == ["box", "first"]
    assert "box (default)" in run_offload("hosts", "list").stdout
    unset = run_offload("hosts", "set", "box", "workdir", "--unset")
    assert unset.returncode == 0, unset.stderr
    assert "workdir" not in read_hosts(offload_home)["box"]
    again = run_offload("hosts", "set", "box", "workdir", "--unset")
    assert again.returncode == 1 and "workdir is not set" in again.stderr


@pytest.mark.parametrize("args, problem", [
    (["gpus", "0"], "gpus must be at least 1, not 0"),
    (["gpus", "two"], "gpus must be processes per node, not 'two'"),
    (["port", "70000"], "port must be between 1 and 65535, not 70000"),
    (["colour", "red"], "unknown key 'colour'"),
    (["env.1BAD", "x"], "env name '1BAD' is not a variable name"),
    (["python", "~bob/python"], "python: only ~/ is understood"),
    (["peak_tflops", "{bf16: -1}"], "peak_tflops must be"),
    (["workdir"], "missing VALUE for workdir"),
])
def test_set_refuses_what_hosts_yaml_would_refuse_and_changes_nothing(offload_home, sshd, args, problem):
    register_host(offload_home, sshd)
    before = (offload_home.path / "hosts.yaml").read_bytes()
    result = run_offload("hosts", "set", "box", *args)
    assert result.returncode == 1
    assert problem in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert (offload_home.path / "hosts.yaml").read_bytes() == before


def test_set_of_an_unknown_host_names_the_known_ones(offload_home, sshd):
    register_host(offload_home, sshd)
    result = run_offload("hosts", "set", "nobox", "gpus", "2")
    assert result.returncode == 1 and "unknown host 'nobox' (known: box)" in result.stderr
