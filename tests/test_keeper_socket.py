"""The keeper's socket is found where the keeper recorded it.

Each `offload sync` is a real process against a real sshd; keepers are stopped by pid when a test ends.
"""
from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

import pytest

from conftest import OffloadHome, register_host, run_offload, stop_keeper
from offload.keeper_client import SOCKET_PATH_MAX
from procs import alive
from test_keeper import keeper_pid, logins

REUSED_KEEPER_S = 2.0  # a sync through a running keeper: a Python start-up and a few round trips


@pytest.fixture
def long_home(offload_home: OffloadHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An OFFLOAD_HOME too long for a unix socket's path, so the keeper's socket goes under TMPDIR
    (this test's own, never the machine's shared /tmp)."""
    long = OffloadHome(path=tmp_path / ("long-offload-home-" + "x" * 70), home=offload_home.home)
    long.path.mkdir()
    assert len(os.fsencode(str(long.path / "keeper.sock"))) > SOCKET_PATH_MAX
    monkeypatch.setenv("OFFLOAD_HOME", str(long.path))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    yield long
    stop_keeper(long.path)


def fallback_dir(tmpdir: Path) -> Path:
    return tmpdir / f"offload-{os.getuid()}"


def fallback_socket(offload_home_path: Path, tmpdir: Path) -> Path:
    """Where keeper_client.socket_path() puts a long OFFLOAD_HOME's socket: named by the path it would have had."""
    digest = hashlib.sha256(os.fsencode(str(offload_home_path / "keeper.sock"))).hexdigest()[:16]
    return fallback_dir(tmpdir) / f"{digest}.sock"


def test_a_different_tmpdir_finds_the_running_keeper_at_once(long_home, fresh_sshd, project, tmp_path):
    register_host(long_home, fresh_sshd)
    first_tmp, second_tmp = tmp_path / "tmp-first", tmp_path / "tmp-second"
    first_tmp.mkdir()
    second_tmp.mkdir()
    first = run_offload("sync", "--project", str(project), env={"TMPDIR": str(first_tmp)})
    assert first.returncode == 0, first.stderr
    pid = keeper_pid(long_home)
    made = os.lstat(fallback_dir(first_tmp))
    assert stat.S_ISDIR(made.st_mode) and stat.S_IMODE(made.st_mode) == 0o700 and made.st_uid == os.getuid()
    connections = logins(fresh_sshd)

    started = time.monotonic()
    second = run_offload("sync", "--project", str(project), env={"TMPDIR": str(second_tmp)})
    took = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert took < REUSED_KEEPER_S, f"the second sync took {took:.1f} s"
    assert keeper_pid(long_home) == pid and alive(pid) and logins(fresh_sshd) == connections  # the same keeper
    assert not fallback_dir(second_tmp).exists()
    assert (long_home.path / "keeper.socket").read_text() == str(fallback_socket(long_home.path, first_tmp))


def test_a_relative_offload_home_keeps_the_socket_inside_it(offload_home, fresh_sshd, project):
    register_host(offload_home, fresh_sshd)
    relative = {"OFFLOAD_HOME": offload_home.path.name}
    result = run_offload("sync", "--project", str(project), cwd=offload_home.path.parent, env=relative)
    assert result.returncode == 0, result.stderr
    socket_path = offload_home.path / "keeper.sock"
    assert stat.S_ISSOCK(os.lstat(socket_path).st_mode)  # not /offload_home/keeper.sock: the keeper runs in /
    assert (offload_home.path / "keeper.socket").read_text() == str(socket_path)
    pid = keeper_pid(offload_home)
    again = run_offload("sync", "--project", str(project), cwd=project, env={"OFFLOAD_HOME": "../offload_home"})
    assert again.returncode == 0, again.stderr
    assert keeper_pid(offload_home) == pid  # the same home from another cwd: the same keeper
