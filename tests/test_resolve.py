"""From a host name to an SSH target: flag > hosts.yaml > ~/.ssh/config > default, with real ssh_config files.

The pure resolve() is fed what paramiko parses out of real config text; the end-to-end tests put that
text in ~/.ssh/config and drive `offload` against the real sshd: an alias, a ProxyJump, ssh-agent.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from conftest import register_host, run_offload
from offload.errors import OffloadError
from offload.resolve import resolve, resolve_jump, split_destination, ssh_config_for
from sshd_server import generate_keypair, wait_for

CONFIG = """\
# a laptop's ~/.ssh/config, as people write them
Host gpu
    HostName 192.0.2.10
    User alice
    Port 2222
    IdentityFile ~/.ssh/id_gpu
    ProxyJump bastion

Host bastion
    HostName 198.51.100.1
    User jump

Host *
    User fallback
    IdentityFile ~/.ssh/id_default
"""
AGENT_START_S = 10.0


@pytest.fixture(autouse=True)
def no_outside_agent(monkeypatch):
    """An agent of whoever runs the tests must not decide whether authentication works."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def parsed(text: str, alias: str) -> dict:
    return dict(paramiko.SSHConfig.from_text(text).lookup(alias))


def write_ssh_config(home: Path, text: str) -> Path:
    path = home / ".ssh" / "config"
    path.write_text(text)
    return path


def stderr_lines(result) -> list:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- the pure precedence --------------------------------------------------------------------------

def test_ssh_config_fills_everything_hosts_yaml_leaves_out(offload_home):
    target = resolve("gpu", {"hostname": "gpu"}, ssh_config=parsed(CONFIG, "gpu"))
    home = str(offload_home.home)
    assert (target.hostname, target.port, target.user) == ("192.0.2.10", 2222, "alice")
    assert target.identity_files == (f"{home}/.ssh/id_gpu", f"{home}/.ssh/id_default")
    assert target.identity_from_config
    assert target.proxy_jump == "bastion"
    assert target.known_hosts_name == "[192.0.2.10]:2222"


def test_hosts_yaml_beats_ssh_config(offload_home):
    entry = {"hostname": "gpu", "port": 2200, "user": "bob", "identity_file": "~/keys/box", "proxy_jump": "none",
             "python": "/opt/venv/bin/python", "workdir": "/scratch/w", "gpus": 2, "env": {"NCCL_P2P_DISABLE": 1}}
    target = resolve("gpu", entry, ssh_config=parsed(CONFIG, "gpu"))
    assert target.hostname == "192.0.2.10"  # HostName still comes from the alias
    assert (target.port, target.user, target.proxy_jump) == (2200, "bob", "none")
    assert target.identity_files == (f"{offload_home.home}/keys/box",) and not target.identity_from_config
    assert (target.python, target.workdir, target.gpus, target.env) == ("/opt/venv/bin/python", "/scratch/w", 2,
                                                                        {"NCCL_P2P_DISABLE": "1"})


def test_flags_beat_hosts_yaml_and_ssh_config(offload_home):
    entry = {"hostname": "gpu", "port": 2200, "user": "bob", "identity_file": "~/keys/box"}
    flags = {"port": 2022, "user": "carol", "identity_file": "/keys/flag", "python": None}
    target = resolve("gpu", entry, flags=flags, ssh_config=parsed(CONFIG, "gpu"))
    assert (target.port, target.user, target.identity_files) == (2022, "carol", ("/keys/flag",))
    assert target.python == "python3"  # a flag left unset (None) does not override anything


def test_defaults_when_nothing_is_set(offload_home, monkeypatch):
    monkeypatch.setenv("LOGNAME", "dave")  # getpass.getuser() reads it first
    target = resolve("box", {}, ssh_config=parsed("", "box"))
    assert (target.hostname, target.port, target.user, target.identity_files) == ("box", 22, "dave", ())
    assert (target.python, target.workdir, target.gpus, target.proxy_jump) == ("python3", "~/offload", 1, None)
    assert target.known_hosts_name == "box"
    assert target.address == "dave@box:22"


def test_host_star_applies_to_any_alias(offload_home):
    target = resolve("other", {"hostname": "203.0.113.7"}, ssh_config=parsed(CONFIG, "203.0.113.7"))
    assert (target.hostname, target.user) == ("203.0.113.7", "fallback")
    assert target.identity_files == (f"{offload_home.home}/.ssh/id_default",)


def test_resolve_reads_the_users_ssh_config_file(offload_home):
    write_ssh_config(offload_home.home, CONFIG)
    assert ssh_config_for("gpu")["hostname"] == "192.0.2.10"
    target = resolve("gpu", {})  # no hostname: the registry name is the alias
    assert (target.hostname, target.port, target.user) == ("192.0.2.10", 2222, "alice")


def test_no_ssh_config_file_means_no_settings(offload_home):
    assert ssh_config_for("gpu") == {}
    assert resolve("gpu", {"user": "u"}).hostname == "gpu"


def test_jump_specs_resolve_like_ssh_J(offload_home):
    write_ssh_config(offload_home.home, CONFIG)
    spelled_out = resolve_jump("ops@198.51.100.9:2201")
    assert (spelled_out.user, spelled_out.hostname, spelled_out.port) == ("ops", "198.51.100.9", 2201)
    alias = resolve_jump("bastion")
    assert (alias.user, alias.hostname, alias.port) == ("jump", "198.51.100.1", 22)


@pytest.mark.parametrize("destination, expected", [
    ("alice@box:2222", ("alice", "box", 2222)),
    ("box", (None, "box", None)),
    ("alice@192.0.2.1", ("alice", "192.0.2.1", None)),
    ("fe80::1", (None, "fe80::1", None)),  # a bare IPv6 address has no port part
])
def test_split_destination(destination, expected):
    assert split_destination(destination) == expected


def test_split_destination_refuses_a_bad_port():
    with pytest.raises(OffloadError, match="bad port"):
        split_destination("box:ssh")


@pytest.mark.parametrize("config_text, expected", [
    ("Port\n", r"cannot read .*/\.ssh/config: Unparsable line Port"),
    ("Host box\n    Port twenty-two\n", r"bad Port 'twenty-two' for box in ~/\.ssh/config"),
])
def test_a_broken_ssh_config_is_one_clear_line(offload_home, config_text, expected):
    write_ssh_config(offload_home.home, config_text)
    (offload_home.path / "hosts.yaml").write_text("hosts:\n  box: {user: u}\n")
    result = run_offload("hosts", "list")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = stderr_lines(result)
    assert re.search(expected, line), line


# --- end to end: the real sshd, reached the ways ssh would reach it ------------------------------

def alias_config(sshd, alias: str = "mybox", extra: str = "") -> str:
    return (f"Host {alias}\n    HostName {sshd.host}\n    Port {sshd.port}\n    User {sshd.user}\n"
            f"    IdentityFile {sshd.client_key_path}\n{extra}")


def test_an_ssh_config_alias_is_added_and_runs(offload_home, sshd, project, tmp_path):
    """HostName, Port, User and IdentityFile all come from ~/.ssh/config; a `Host *` IdentityFile that does
    not exist (a common leftover) is skipped, as ssh skips it."""
    write_ssh_config(offload_home.home, alias_config(sshd) + "\nHost *\n    IdentityFile ~/.ssh/id_rsa\n")
    added = run_offload("hosts", "add", "gpu", "mybox", "--yes", "--python", sys.executable,
                        "--workdir", str(tmp_path / "remote"))
    assert added.returncode == 0, added.stderr
    assert (offload_home.path / "known_hosts").read_text() == sshd.known_hosts_line + "\n"

    ran = run_offload("run", "report.py", "one arg", cwd=project)
    assert ran.returncode == 0, ran.stderr
    assert '"argv": ["one arg"]' in ran.stdout
    assert str(tmp_path / "remote") in ran.stdout  # it ran in the host's workdir, not locally
    assert "running locally" not in ran.stderr


def accepted_keys(server) -> list:
    """SHA256 fingerprints of the keys sshd accepted, in order (LogLevel VERBOSE logs each)."""
    return re.findall(r"Accepted publickey for \S+ from \S+ port \d+ ssh2: \S+ (SHA256:\S+)", server.log_path.read_text())


def fingerprint_of(public_key_path: Path) -> str:
    done = subprocess.run(["ssh-keygen", "-lf", str(public_key_path)], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.split()[1]


def test_proxy_jump_through_the_same_sshd(offload_home, fresh_sshd, project, tmp_path):
    """The hop's key is never trusted silently, and `hosts add --yes` confirms it like the host's own. Then a
    run makes two logins, both seen in sshd's log: the hop's with its own key, the host's with the client key."""
    jump_key = tmp_path / "jump_key"
    with open(fresh_sshd.authorized_keys_path, "a") as f:
        f.write(generate_keypair(jump_key) + "\n")
    write_ssh_config(offload_home.home, f"Host jumpbox\n    HostName {fresh_sshd.host}\n    Port {fresh_sshd.port}\n"
                                        f"    User {fresh_sshd.user}\n    IdentityFile {jump_key}\n")
    register_host(offload_home, fresh_sshd, trust_key=False, proxy_jump="jumpbox")

    refused = run_offload("run", "report.py", cwd=project)  # the hop's key is not known: never trusted silently
    assert refused.returncode == 255, refused.stderr
    [line] = stderr_lines(refused)
    assert "host key of jumpbox" in line and "`offload hosts check box`" in line, line
    assert not list(project.glob(".offload/runs/*"))

    with open(offload_home.home / ".ssh" / "config", "a") as f:  # a ProxyJump from ~/.ssh/config, this time
        f.write(alias_config(fresh_sshd, "behindjump", "    ProxyJump jumpbox\n"))
    added = run_offload("hosts", "add", "viajump", "behindjump", "--yes")  # --yes confirms the hop's key too
    assert added.returncode == 0, added.stderr
    assert (offload_home.path / "known_hosts").read_text() == fresh_sshd.known_hosts_line + "\n"

    ran = run_offload("run", "--host", "box", "report.py", "via", "jump", cwd=project)
    assert ran.returncode == 0, ran.stderr
    assert '"argv": ["via", "jump"]' in ran.stdout
    logins = accepted_keys(fresh_sshd)
    assert logins[-2:] == [fingerprint_of(Path(f"{jump_key}.pub")), fingerprint_of(Path(f"{fresh_sshd.client_key_path}.pub"))]


@pytest.fixture
def ssh_agent(tmp_path):
    """A real ssh-agent on its own socket, stopped by pid."""
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = wait_for(lambda: socket_path.exists() or agent.poll() is not None, AGENT_START_S)
        assert started and agent.poll() is None, f"ssh-agent did not start: {agent.stderr.read() if agent.poll() is not None else ''}"
        yield socket_path
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=5)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=5)
        agent.stderr.close()


def test_ssh_agent_authenticates_a_host_without_identity_file(offload_home, sshd, project, ssh_agent):
    added = subprocess.run(["ssh-add", str(sshd.client_key_path)], env={"SSH_AUTH_SOCK": str(ssh_agent)},
                           capture_output=True, text=True, timeout=10)
    assert added.returncode == 0, added.stderr
    register_host(offload_home, sshd, identity_file=None)
    assert list((offload_home.home / ".ssh").iterdir()) == []  # no key file offload could find on its own

    without_agent = run_offload("run", "report.py", cwd=project)
    assert without_agent.returncode == 255, without_agent.stderr
    assert "no key to log in to box" in without_agent.stderr

    with_agent = run_offload("run", "report.py", "agent", cwd=project, env={"SSH_AUTH_SOCK": str(ssh_agent)})
    assert with_agent.returncode == 0, with_agent.stderr
    assert '"argv": ["agent"]' in with_agent.stdout


def test_an_identity_file_naming_a_public_key_selects_the_agents_key(offload_home, sshd, project, ssh_agent):
    """`IdentityFile key.pub` with the private key only in ssh-agent (how hardware and password-manager
    agents are set up) works; without an agent, such a file is refused with a line that says why."""
    subprocess.run(["ssh-add", str(sshd.client_key_path)], env={"SSH_AUTH_SOCK": str(ssh_agent)},
                   capture_output=True, timeout=10, check=True)
    register_host(offload_home, sshd, identity_file=f"{sshd.client_key_path}.pub")
    with_agent = run_offload("run", "report.py", cwd=project, env={"SSH_AUTH_SOCK": str(ssh_agent)})
    assert with_agent.returncode == 0, with_agent.stderr
    without_agent = run_offload("run", "report.py", cwd=project)
    assert without_agent.returncode == 1
    [line] = stderr_lines(without_agent)
    assert f"identity file {sshd.client_key_path}.pub for box is a public key" in line


def test_hosts_add_takes_a_proxy_jump_flag(offload_home, fresh_sshd, project, tmp_path):
    write_ssh_config(offload_home.home, f"Host jumpbox\n    HostName {fresh_sshd.host}\n    Port {fresh_sshd.port}\n"
                                        f"    User {fresh_sshd.user}\n    IdentityFile {fresh_sshd.client_key_path}\n")
    added = run_offload("hosts", "add", "box", f"{fresh_sshd.user}@{fresh_sshd.host}:{fresh_sshd.port}", "-J", "jumpbox",
                        "-i", str(fresh_sshd.client_key_path), "--python", sys.executable,
                        "--workdir", str(tmp_path / "remote"), "--yes")
    assert added.returncode == 0, added.stderr
    assert "proxy_jump: jumpbox" in (offload_home.path / "hosts.yaml").read_text()
    ran = run_offload("run", "report.py", "jumped", cwd=project)
    assert ran.returncode == 0, ran.stderr
    assert '"argv": ["jumped"]' in ran.stdout
    assert len(accepted_keys(fresh_sshd)) >= 3  # add's login, then the run's hop and host logins
