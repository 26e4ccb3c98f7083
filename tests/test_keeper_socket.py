"""The keeper's socket is this user's alone, and found where the keeper recorded it.

Another local user is played for real by forked children that setuid to nobody (tests/other_user.py; tests
run as root, as CI does). Each `offload sync` is a real process against a real sshd; keepers are stopped by
pid when a test ends.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from pathlib import Path

import pytest

from conftest import OffloadHome, register_host, run_offload, stop_keeper
from offload.keeper_client import PROTOCOL, code_fingerprint
from offload.paths import SOCKET_PATH_MAX
from other_user import NOBODY, ForeignListener, send_as_nobody
from procs import alive
from test_keeper import keeper_pid, logins
from test_sync import host_project_dir, sync

TOKEN = {"OFFLOAD_TEST_TOKEN": "secret-3f9c0d"}  # stands for the tokens a user's environment holds
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
    """Where paths.keeper_socket_path() puts a long OFFLOAD_HOME's socket: named by the path it would have had."""
    digest = hashlib.sha256(os.fsencode(str(offload_home_path / "keeper.sock"))).hexdigest()[:16]
    return fallback_dir(tmpdir) / f"{digest}.sock"


def owned_by_nobody(directory: Path, tmp_path: Path) -> Path:
    directory.mkdir(mode=0o700)  # as private as ours would be: only its owner gives it away
    os.chown(directory, NOBODY, NOBODY)
    return directory


def a_link_to_our_own_private_dir(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / "where-the-link-points"
    target.mkdir(mode=0o700)
    directory.symlink_to(target)
    return target


def ours_but_open_to_all(directory: Path, tmp_path: Path) -> Path:
    directory.mkdir()
    directory.chmod(0o755)
    return directory


@pytest.mark.parametrize("make", [owned_by_nobody, a_link_to_our_own_private_dir, ours_but_open_to_all])
def test_a_fallback_dir_that_is_not_private_is_not_used(long_home, fresh_sshd, project, tmp_path, make):
    host = register_host(long_home, fresh_sshd)
    tmpdir = tmp_path / "tmp"
    made = make(fallback_dir(tmpdir), tmp_path)
    before = os.lstat(fallback_dir(tmpdir))
    planted = fallback_socket(long_home.path, tmpdir)
    foreign = made.stat().st_uid == NOBODY
    with contextlib.ExitStack() as stack:
        if foreign:  # the attack itself: the other user listens where our socket would go
            stack.enter_context(ForeignListener(planted, tmp_path / "received"))
        result = run_offload("sync", "--project", str(project), env=TOKEN)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (host_project_dir(host["workdir"], project) / "report.py").exists()  # it ran, in-process
    if foreign:
        assert (tmp_path / "received").read_bytes() == b""  # no argv, no environment, no token
    assert not (long_home.path / "keeper.pid").exists() and not (long_home.path / "keeper.socket").exists()
    assert sorted(os.listdir(made)) == ([planted.name] if foreign else [])  # nothing of ours went there
    after = os.lstat(fallback_dir(tmpdir))
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)  # never bent into shape


def test_a_socket_of_another_user_at_the_recorded_path_is_sent_nothing(offload_home, fresh_sshd, project, tmp_path):
    host = register_host(offload_home, fresh_sshd)
    socket_path = offload_home.path / "keeper.sock"  # the file is ours; the process listening on it is nobody's
    (offload_home.path / "keeper.socket").write_text(str(socket_path))
    with ForeignListener(socket_path, tmp_path / "received", bound_by_us=True) as impostor:
        result = run_offload("sync", "--project", str(project), env=TOKEN)
        received = impostor.received()
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert received == b"", received[:200]  # refused before the request: the token never left this process
    assert (host_project_dir(host["workdir"], project) / "report.py").exists()
    assert not (offload_home.path / "keeper.pid").exists()  # in-process, as the refusal says


def test_the_keeper_answers_no_process_of_another_user(offload_home, fresh_sshd, project, tmp_path):
    register_host(offload_home, fresh_sshd)
    sync(project)
    pid = keeper_pid(offload_home)
    socket_path = offload_home.path / "keeper.sock"
    offload_home.path.chmod(0o755)
    socket_path.chmod(0o666)  # Linux would stop nobody at the file's mode: the keeper must not rest on that alone
    request = {"v": PROTOCOL, "code": code_fingerprint(), "argv": ["hosts", "remove", "box"], "cwd": str(project),
               "env": {"OFFLOAD_HOME": str(offload_home.path), "HOME": str(offload_home.home),
                       "PATH": os.environ["PATH"]}, "tty": {}, "columns": 80}
    assert send_as_nobody(socket_path, request, tmp_path / "reply") == 0  # it connected
    assert (tmp_path / "reply").read_bytes() == b""  # closed unanswered
    assert "box:" in (offload_home.path / "hosts.yaml").read_text()  # and the command never ran
    assert alive(pid)
    connections = logins(fresh_sshd)
    sync(project)
    assert keeper_pid(offload_home) == pid and logins(fresh_sshd) == connections  # it serves its own user on


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
