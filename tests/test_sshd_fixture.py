"""The sshd fixtures themselves: a real server that paramiko can use, and that leaves nothing behind."""

from __future__ import annotations

import base64
import os
import socket
import time
from pathlib import Path

import paramiko
import pytest

from sshd_server import SilentListener, SshServer, closed_port, descendants, generate_keypair, wait_for


def connect(server: SshServer, host_public_key: str | None = None) -> paramiko.SSHClient:
    """A paramiko client that trusts only host_public_key (default: the server's real one)."""
    key_type, key_base64 = (host_public_key or server.host_public_key).split()[:2]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(
        f"[{server.host}]:{server.port}", key_type,
        paramiko.PKey.from_type_string(key_type, base64.b64decode(key_base64)),
    )
    client.connect(
        server.host, port=server.port, username=server.user, key_filename=str(server.client_key_path),
        look_for_keys=False, allow_agent=False, timeout=5, banner_timeout=5, auth_timeout=5,
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, bytes]:
    _, stdout, _ = client.exec_command(command, timeout=5)
    output = stdout.read()
    return stdout.channel.recv_exit_status(), output


def gone(pid: int) -> bool:
    """No /proc entry, or only a zombie's (dead, waiting to be reaped, by pid 1 if orphaned)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def test_paramiko_runs_a_command_on_sshd_with_verified_host_key(sshd):
    client = connect(sshd)
    try:
        assert run(client, "echo hi") == (0, b"hi\n")
        assert run(client, "echo ~") == (0, f"{sshd.remote_home}\n".encode())
        served_key = client.get_transport().get_remote_server_key()
        assert f"{served_key.get_name()} {served_key.get_base64()}" == sshd.host_public_key
    finally:
        client.close()


def test_sftp_works_on_sshd(sshd):
    client = connect(sshd)
    try:
        with client.open_sftp() as sftp:
            assert "authorized_keys" in sftp.listdir(str(sshd.directory))
    finally:
        client.close()


def test_a_different_host_key_is_rejected(sshd, tmp_path):
    impostor_key = generate_keypair(tmp_path / "impostor")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(sshd, host_public_key=impostor_key)


def test_an_unknown_client_key_is_refused(sshd, tmp_path):
    generate_keypair(tmp_path / "stranger")
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        f"[{sshd.host}]:{sshd.port}", "ssh-ed25519",
        paramiko.PKey.from_type_string("ssh-ed25519", base64.b64decode(sshd.host_public_key.split()[1])),
    )
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            sshd.host, port=sshd.port, username=sshd.user, key_filename=str(tmp_path / "stranger"),
            look_for_keys=False, allow_agent=False, timeout=5, banner_timeout=5, auth_timeout=5,
        )
    client.close()


def test_kill_connections_drops_open_links_and_the_listener_keeps_serving(fresh_sshd):
    dropped = connect(fresh_sshd)
    try:
        assert run(dropped, "echo before") == (0, b"before\n")
        killed = fresh_sshd.kill_connections()
        assert killed, "an open connection should have sshd processes serving it"
        assert all(gone(pid) for pid in killed)
        assert wait_for(lambda: not dropped.get_transport().is_active(), 3.0)
        assert not gone(fresh_sshd.pid)
        with pytest.raises(paramiko.SSHException):
            dropped.exec_command("echo after", timeout=2)
    finally:
        dropped.close()
    client = connect(fresh_sshd)
    try:
        assert run(client, "echo after") == (0, b"after\n")
    finally:
        client.close()


def test_stop_leaves_no_process_behind(fresh_sshd):
    client = connect(fresh_sshd)
    try:
        # a command still running in the session: stop() must end it too
        client.exec_command("sleep 30")
        listener_pid = fresh_sshd.pid
        assert wait_for(lambda: sleep_pids_below(listener_pid), 5.0), "the session's sleep never started"
        sleep_pids = sleep_pids_below(listener_pid)
        connection_pids = fresh_sshd.connection_pids()
        assert connection_pids, "an open connection should have sshd processes serving it"
        fresh_sshd.stop()
        assert not Path(f"/proc/{listener_pid}").exists()  # we are its parent, so it is reaped too
        assert all(gone(pid) for pid in connection_pids + sleep_pids)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((fresh_sshd.host, fresh_sshd.port), timeout=2).close()
    finally:
        client.close()


def sleep_pids_below(ancestor_pid: int) -> list[int]:
    return [proc.pid for proc in descendants(ancestor_pid) if proc.comm == "sleep"]


def test_a_silent_host_fails_at_the_banner_within_the_timeout(silent_listener: SilentListener):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    started = time.monotonic()
    with pytest.raises(paramiko.SSHException, match="banner"):
        client.connect(
            silent_listener.host, port=silent_listener.port, username="nobody",
            timeout=2, banner_timeout=1, auth_timeout=1, look_for_keys=False, allow_agent=False,
        )
    elapsed = time.monotonic() - started
    client.close()
    assert 0.9 <= elapsed < 2.0, elapsed
    assert len(silent_listener.accepted) == 1


def test_a_closed_port_refuses():
    port = closed_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    client = paramiko.SSHClient()
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
        client.connect(
            "127.0.0.1", port=port, username="nobody", timeout=2, look_for_keys=False, allow_agent=False,
        )
    client.close()


def test_offload_home_isolates_offload_home_and_home(offload_home):
    assert os.environ["OFFLOAD_HOME"] == str(offload_home.path) and offload_home.path.is_dir()
    assert Path("~").expanduser() == offload_home.home
    assert (offload_home.home / ".ssh").stat().st_mode & 0o777 == 0o700
    assert not any((offload_home.home / ".ssh").iterdir())
