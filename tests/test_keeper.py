"""The link keeper: later syncs reuse one SSH connection and agent, and behave exactly as in-process ones.

Every `offload sync` here is a real process against a real sshd; the keeper it leaves running is stopped
by pid when the test ends (the offload_home fixture), and tests that stop it themselves check it is gone.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
from pathlib import Path

import offload

from conftest import register_host, run_offload
from procs import alive
from remote_agent.tree import SYNC_LOCK
from sshd_server import wait_for
from test_sync import host_project_dir, kill_sync_when_in_flight, sha256, sync



def keeper_pid(offload_home) -> int:
    return int((offload_home.path / "keeper.pid").read_text())


def logins(server) -> int:
    """Connections the sshd accepted so far (LogLevel VERBOSE logs one line per authentication)."""
    return server.log_path.read_text(errors="replace").count("Accepted publickey")


def test_later_syncs_reuse_the_first_ones_connection_and_say_the_same(offload_home, fresh_sshd, project):
    host = register_host(offload_home, fresh_sshd)
    first = sync(project)
    assert "sync: 1 file" in first.stderr
    pid = keeper_pid(offload_home)
    assert alive(pid)
    connections = logins(fresh_sshd)

    (project / "new.txt").write_text("hello\n")
    second = sync(project)
    third = sync(project)
    assert logins(fresh_sshd) == connections  # no new SSH connection: the keeper's link was reused
    assert keeper_pid(offload_home) == pid
    assert second.stderr.startswith("sync: 1 file, 6 B; largest: new.txt (6 B)")
    assert "synced 1 changed of 2 entries" in second.stderr
    assert third.stderr == "sync: box is up to date (2 files)\n"
    assert (host_project_dir(host["workdir"], project) / "new.txt").read_text() == "hello\n"


def test_errors_help_and_exit_codes_come_back_as_in_process(offload_home, fresh_sshd, project):
    register_host(offload_home, fresh_sshd)
    sync(project)
    unknown = run_offload("sync", "--project", str(project), "--host", "nosuch")
    in_process = run_offload("sync", "--project", str(project), "--host", "nosuch", env={"OFFLOAD_KEEP_ALIVE": "0"})
    assert unknown.returncode == in_process.returncode != 0
    assert unknown.stderr == in_process.stderr and len(unknown.stderr.splitlines()) == 1
    assert "nosuch" in unknown.stderr and "Traceback" not in unknown.stderr

    helped = run_offload("sync", "--help")
    assert helped.returncode == 0 and "--project" in helped.stdout  # stdout stays stdout

    bad_option = run_offload("sync", "--no-such-option")
    assert bad_option.returncode == 2 and "No such option" in bad_option.stderr


def test_keep_alive_zero_runs_in_process_and_starts_no_keeper(offload_home, fresh_sshd, project):
    host = register_host(offload_home, fresh_sshd)
    result = run_offload("sync", "--project", str(project), env={"OFFLOAD_KEEP_ALIVE": "0"})
    assert result.returncode == 0, result.stderr
    assert not (offload_home.path / "keeper.pid").exists()
    assert (host_project_dir(host["workdir"], project) / "report.py").exists()


def test_an_idle_keeper_exits_on_its_own(offload_home, fresh_sshd, project):
    register_host(offload_home, fresh_sshd)
    sync_result = run_offload("sync", "--project", str(project), env={"OFFLOAD_KEEP_ALIVE": "1"})
    assert sync_result.returncode == 0, sync_result.stderr
    pid = keeper_pid(offload_home)
    assert wait_for(lambda: not alive(pid), 15), "the keeper outlived its keep-alive"
    assert not any((offload_home.path / name).exists() for name in ("keeper.pid", "keeper.sock", "keeper.socket"))


def test_a_dropped_kept_link_is_replaced_without_the_user_noticing(offload_home, fresh_sshd, project):
    host = register_host(offload_home, fresh_sshd)
    sync(project)
    assert fresh_sshd.kill_connections()  # the host rebooted, the Wi-Fi changed: the kept link is dead
    (project / "after.txt").write_text("after the drop\n")
    result = sync(project)
    assert "lost the link" not in result.stderr
    assert (host_project_dir(host["workdir"], project) / "after.txt").read_text() == "after the drop\n"


def test_hosts_yaml_changes_apply_to_the_next_sync(offload_home, fresh_sshd, project, tmp_path):
    register_host(offload_home, fresh_sshd)
    sync(project)
    moved = register_host(offload_home, fresh_sshd, workdir=str(tmp_path / "elsewhere"), trust_key=False)
    sync(project)
    assert (host_project_dir(moved["workdir"], project) / "report.py").exists()


def test_a_killed_keeper_is_replaced_by_the_next_sync(offload_home, fresh_sshd, project):
    host = register_host(offload_home, fresh_sshd)
    sync(project)
    first = keeper_pid(offload_home)
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: not alive(first), 10)
    (project / "late.txt").write_text("x")
    sync(project)  # the socket file is stale: a new keeper takes over
    assert keeper_pid(offload_home) != first and alive(keeper_pid(offload_home))
    assert (host_project_dir(host["workdir"], project) / "late.txt").read_text() == "x"


def test_hosts_disconnect_stops_the_keeper(offload_home, fresh_sshd, project):
    register_host(offload_home, fresh_sshd)
    sync(project)
    pid = keeper_pid(offload_home)
    result = run_offload("hosts", "disconnect")
    assert result.returncode == 0, result.stderr
    assert f"stopped the link keeper (pid {pid})" in result.stderr
    assert wait_for(lambda: not alive(pid), 10)
    again = run_offload("hosts", "disconnect")
    assert again.returncode == 0 and "no link keeper is running" in again.stderr


def test_a_client_killed_mid_sync_aborts_only_its_sync(offload_home, fresh_sshd, project):
    host = register_host(offload_home, fresh_sshd)
    (project / "weights.bin").write_bytes(os.urandom(1000))
    sync(project)
    old_sha = sha256(project / "weights.bin")
    host_dir = host_project_dir(host["workdir"], project)
    (project / "weights.bin").write_bytes(os.urandom(96 << 20))  # as test_sync's kill mid-file: in flight long enough to be caught there
    part = host_dir / ".weights.bin.offload-part"
    in_flight, _ = kill_sync_when_in_flight(project, part)
    assert in_flight, "the sync ended before the big file was in flight"
    assert wait_for(lambda: not part.exists(), 10), "the keeper did not abort the sync"
    # the host's sync lock free again: the aborted sync is over there, so nothing more can land
    assert wait_for(lambda: sync_lock_is_free(host_dir), 10), "the aborted sync still holds the host's sync lock"
    assert sha256(host_dir / "weights.bin") == old_sha  # nothing went on after the kill
    assert alive(keeper_pid(offload_home))
    sync(project)
    assert sha256(host_dir / "weights.bin") == sha256(project / "weights.bin")


def sync_lock_is_free(host_dir: Path) -> bool:
    fd = os.open(host_dir / SYNC_LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the lock taken for the look
    return True


def installed_copy(root: Path) -> Path:
    """offload and its agent copied as an install would put them: a tree of our own to upgrade."""
    source = Path(offload.__file__).parent.parent
    for package in ("offload", "remote_agent"):
        shutil.copytree(source / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_an_upgrade_retires_the_keeper_and_a_new_one_serves_the_next_sync(offload_home, fresh_sshd, project, tmp_path):
    register_host(offload_home, fresh_sshd)
    installed = {"PYTHONPATH": str(installed_copy(tmp_path / "site-packages"))}
    sync_installed = ("sync", "--project", str(project))
    assert run_offload(*sync_installed, cwd=tmp_path, env=installed).returncode == 0  # cwd: not this checkout
    old = keeper_pid(offload_home)
    with open(tmp_path / "site-packages" / "offload" / "cli.py", "a") as cli_source:
        cli_source.write("# the next release\n")

    upgraded = run_offload(*sync_installed, cwd=tmp_path, env=installed)
    assert upgraded.returncode == 0 and "Traceback" not in upgraded.stderr, upgraded.stderr
    assert wait_for(lambda: not alive(old), 10), "the keeper of the old code kept running"
    new = keeper_pid(offload_home)
    assert new != old and alive(new)
    connections = logins(fresh_sshd)
    assert run_offload(*sync_installed, cwd=tmp_path, env=installed).returncode == 0
    assert keeper_pid(offload_home) == new and logins(fresh_sshd) == connections  # the new keeper held the link
