"""Host keys are verified, never trusted silently; a host that refuses us is an error, never a local run.

The interactive tests run `offload` on a real pseudo-terminal and answer its prompt as a person would.
"""
from __future__ import annotations

import base64
import re
import shlex
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

import terminal
from conftest import register_host, run_offload
from offload.transport.hostkeys import fingerprint
from sshd_server import SshServer, generate_keypair

PROMPT = b"[y/N] "
PTY_DEADLINE_S = 60.0
CTRL_D = b"\x04"


@pytest.fixture(autouse=True)
def no_outside_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def stderr_lines(result) -> list:
    return [line for line in result.stderr.splitlines() if line.strip()]


def refused(result, code: int) -> str:
    """The single line a refused `offload` prints, checked for the usual promises."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    return lines[0]


def assert_nothing_ran(project: Path, result) -> None:
    assert not list(project.glob(".offload/runs/*")), "a run was recorded"
    assert "running locally" not in result.stderr and result.stdout == ""


def ssh_keygen_fingerprint(public_key: Path) -> str:
    done = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.split()[1]


def test_fingerprint_is_openssh_sha256(sshd):
    key_type, key_base64 = sshd.host_public_key.split()
    key = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_base64))
    assert fingerprint(key) == ssh_keygen_fingerprint(Path(f"{sshd.host_key_path}.pub"))


# --- refusals: no key trusted silently, no fallback ------------------------------------------------

def test_an_unknown_key_is_refused_without_a_terminal(offload_home, sshd, project):
    register_host(offload_home, sshd, trust_key=False)
    result = run_offload("run", "report.py", cwd=project)
    line = refused(result, 255)
    assert f"host key of box ([{sshd.host}]:{sshd.port}) is not known" in line
    assert ssh_keygen_fingerprint(Path(f"{sshd.host_key_path}.pub")) in line
    assert "`offload hosts check box`" in line
    assert_nothing_ran(project, result)
    assert not (offload_home.path / "known_hosts").exists()


def stale_key_line(sshd, tmp_path: Path) -> str:
    """A known_hosts line for the server's address with another ed25519 key: what a reinstalled box looks like."""
    return f"[{sshd.host}]:{sshd.port} {generate_keypair(tmp_path / 'old_host_key')}\n"


def test_a_changed_key_is_refused_and_the_hint_works(offload_home, sshd, project, tmp_path):
    register_host(offload_home, sshd, trust_key=False)
    known_hosts = offload_home.path / "known_hosts"
    known_hosts.write_text(stale_key_line(sshd, tmp_path))

    result = run_offload("run", "report.py", cwd=project)
    line = refused(result, 255)
    assert f"host key of box ([{sshd.host}]:{sshd.port}) CHANGED" in line
    assert f"got {ssh_keygen_fingerprint(Path(f'{sshd.host_key_path}.pub'))}" in line
    assert_nothing_ran(project, result)

    command = re.search(r"`(ssh-keygen -R [^`]+)`", line).group(1)  # do what the hint says
    subprocess.run(shlex.split(command), capture_output=True, timeout=10, check=True)
    assert "ssh-ed25519" not in known_hosts.read_text()
    again = run_offload("run", "report.py", cwd=project)  # the new key is not trusted silently either
    assert "is not known" in refused(again, 255)


def test_a_changed_key_in_users_known_hosts_is_refused_too(offload_home, sshd, project, tmp_path):
    register_host(offload_home, sshd, trust_key=False)
    (offload_home.home / ".ssh" / "known_hosts").write_text(stale_key_line(sshd, tmp_path))
    result = run_offload("run", "report.py", cwd=project)
    assert "CHANGED" in refused(result, 255)
    assert_nothing_ran(project, result)


def test_an_unknown_client_key_is_an_error_not_a_fallback(offload_home, sshd, project, tmp_path):
    generate_keypair(tmp_path / "stranger")
    register_host(offload_home, sshd, identity_file=str(tmp_path / "stranger"))
    result = run_offload("run", "report.py", cwd=project)
    line = refused(result, 255)
    assert f"authentication to box as {sshd.user} failed" in line
    assert_nothing_ran(project, result)


@pytest.mark.parametrize("make_identity, message", [
    (lambda tmp: tmp / "missing", "cannot read identity file {path} for box: No such file or directory"),
    (lambda tmp: tmp / "notes.txt", "identity file {path} for box is not a private key"),
    (lambda tmp: Path(f"{tmp / 'key'}.pub"), "identity file {path} for box is a public key"),
])
def test_an_unusable_identity_file_is_one_line(offload_home, sshd, project, tmp_path, make_identity, message):
    generate_keypair(tmp_path / "key")
    (tmp_path / "notes.txt").write_text("remember to buy milk\n")  # root reads anything: only the content can fail
    path = make_identity(tmp_path)
    register_host(offload_home, sshd, identity_file=str(path))
    result = run_offload("run", "report.py", cwd=project)
    assert message.format(path=path) in refused(result, 1)
    assert_nothing_ran(project, result)


# --- interactive: a real pseudo-terminal ---------------------------------------------------------

def run_in_terminal(args: list, answer: bytes) -> tuple:
    return terminal.run_in_terminal(args, answer, PROMPT, deadline_s=PTY_DEADLINE_S)


@pytest.mark.parametrize("answer, trusted", [(b"y\n", True), (b"n\n", False), (CTRL_D, False)])
def test_add_asks_on_a_terminal(offload_home, sshd, answer, trusted):
    args = ["hosts", "add", "box", f"{sshd.user}@{sshd.host}", "--port", str(sshd.port),
            "--identity", str(sshd.client_key_path)]
    code, shown = run_in_terminal(args, answer)
    assert "Trust this key? [y/N]" in shown
    assert ssh_keygen_fingerprint(Path(f"{sshd.host_key_path}.pub")) in shown
    assert "Traceback" not in shown
    known_hosts = offload_home.path / "known_hosts"
    if trusted:
        assert code == 0, shown
        assert known_hosts.read_text() == sshd.known_hosts_line + "\n"
        assert "box:" in (offload_home.path / "hosts.yaml").read_text()
    else:
        assert code == 1, shown
        assert "box not added: you did not trust its host key" in shown
        assert not known_hosts.exists() and not (offload_home.path / "hosts.yaml").exists()


def test_a_host_added_while_down_has_its_key_confirmed_by_hosts_check(offload_home, tmp_path):
    server = SshServer(tmp_path / "late")  # its port is chosen now; sshd starts later
    added = run_offload("hosts", "add", "late", f"{server.user}@{server.host}", "--port", str(server.port),
                        "--identity", str(server.client_key_path), "--python", sys.executable, "--workdir", "~/w")
    assert added.returncode == 0, added.stderr
    assert "`offload hosts check late`" in added.stderr
    port = server.port
    with server:
        assert server.port == port, "sshd had to move to another port; run the test again"
        code, shown = run_in_terminal(["hosts", "check", "late"], b"y\n")
        assert ssh_keygen_fingerprint(Path(f"{server.host_key_path}.pub")) in shown
        assert code == 0, shown  # healthy: reachable, logged in, python and torch found
        assert (offload_home.path / "known_hosts").read_text() == server.known_hosts_line + "\n"


def test_lines_paramiko_cannot_read_do_not_stop_known_keys_from_working(offload_home, sshd, project, tmp_path):
    """An @cert-authority line (common where host keys are signed) or a damaged line is skipped, as ssh skips it."""
    register_host(offload_home, sshd, trust_key=False)
    ca_key = generate_keypair(tmp_path / "ca")
    (offload_home.home / ".ssh" / "known_hosts").write_text(
        f"@cert-authority *.example.org {ca_key}\n"
        "damaged.example.org ssh-ed25519 AAAA!!\n"
        f"{sshd.known_hosts_line}\n")
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 0, result.stderr


# --- @revoked: refused before anything else ------------------------------------------------------

def accepted_logins(server) -> int:
    return server.log_path.read_text().count("Accepted publickey")


def hashed_name(name: str, public_key: str, tmp_path: Path) -> str:
    """`name` as HashKnownHosts writes it, by ssh-keygen -H (which leaves marker lines unhashed)."""
    scratch = tmp_path / "to_hash"
    scratch.write_text(f"{name} {public_key}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(scratch)], capture_output=True, timeout=10, check=True)
    return scratch.read_text().split()[0]


@pytest.mark.parametrize("patterns", ["exact", "*", "hashed", "other.example,[{host}]:{port}"])
def test_a_revoked_key_is_refused_whatever_offloads_known_hosts_says(offload_home, sshd, project, tmp_path, patterns):
    """offload's own known_hosts trusts the key; a @revoked line for it in ~/.ssh/known_hosts still refuses it,
    with one line, before authentication (sshd logs no login)."""
    register_host(offload_home, sshd)  # trusted in offload's known_hosts
    name = f"[{sshd.host}]:{sshd.port}"
    field = {"exact": name, "hashed": hashed_name(name, sshd.host_public_key, tmp_path)}.get(
        patterns, patterns.format(host=sshd.host, port=sshd.port))
    user_known_hosts = offload_home.home / ".ssh" / "known_hosts"
    user_known_hosts.write_text(f"# revoked after the break-in\n@revoked {field} {sshd.host_public_key}\n")
    logins = accepted_logins(sshd)

    result = run_offload("run", "report.py", cwd=project)
    line = refused(result, 255)
    assert f"host key of box ({name}) is REVOKED ({user_known_hosts}:2)" in line, line
    assert ssh_keygen_fingerprint(Path(f"{sshd.host_key_path}.pub")) in line
    assert_nothing_ran(project, result)
    assert accepted_logins(sshd) == logins  # refused before any key of ours was offered


def test_a_revoked_key_is_never_offered_for_trust(offload_home, sshd):
    """`hosts add --yes` trusts an unknown key, but not a revoked one: nothing is saved."""
    (offload_home.home / ".ssh" / "known_hosts").write_text(f"@revoked * {sshd.host_public_key}\n")
    result = run_offload("hosts", "add", "box", f"{sshd.user}@{sshd.host}", "--port", str(sshd.port),
                         "--identity", str(sshd.client_key_path), "--yes")
    assert "is REVOKED" in refused(result, 255)
    assert not (offload_home.path / "known_hosts").exists() and not (offload_home.path / "hosts.yaml").exists()


def test_a_revoked_line_for_other_hosts_revokes_nothing_here(offload_home, sshd, project, tmp_path):
    """The line's host patterns count, as in ssh: another host's, or one this host is negated out of."""
    register_host(offload_home, sshd)
    (offload_home.home / ".ssh" / "known_hosts").write_text(
        f"@revoked other.example {sshd.host_public_key}\n"
        f"@revoked *,![{sshd.host}]:{sshd.port} {sshd.host_public_key}\n"
        f"@revoked * ssh-ed25519 AAAA!!\n"  # damaged: revokes nothing, breaks nothing
        f"@revoked * {generate_keypair(tmp_path / 'some_other_key')}\n")
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 0, result.stderr


def test_a_revoked_line_in_the_systems_known_hosts_counts_too(tmp_path):
    """OpenSSH's GlobalKnownHostsFile (/etc/ssh/ssh_known_hosts) is read for @revoked as the user's files are."""
    from offload.errors import RevokedHostKey
    from offload.transport.hostkeys import GLOBAL_KNOWN_HOSTS, refuse_if_revoked
    from offload.config.resolve import resolve

    assert Path("/etc/ssh/ssh_known_hosts") in GLOBAL_KNOWN_HOSTS
    key_line = generate_keypair(tmp_path / "host_key")  # "ssh-ed25519 AAAA..."
    key = paramiko.PKey.from_type_string(key_line.split()[0], base64.b64decode(key_line.split()[1]))
    system_file = tmp_path / "ssh_known_hosts"
    system_file.write_text(f"box.example ssh-rsa AAAAB3NzaC1yc2E=\n@revoked box.example {key_line}\n")
    target = resolve("box", {"hostname": "box.example", "port": 22}, ssh_config={})
    with pytest.raises(RevokedHostKey, match=f"{system_file}:2"):
        refuse_if_revoked(target, key, files=(system_file,))
    refuse_if_revoked(resolve("other", {"hostname": "other.example", "port": 22}, ssh_config={}), key,
                      files=(system_file,))  # another host's revocation revokes nothing here
