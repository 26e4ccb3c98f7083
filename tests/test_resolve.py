"""From a host name to an SSH target: flag > hosts.yaml > ~/.ssh/config > default, with real ssh_config files.

The pure resolve() is fed what paramiko parses out of real config text; the end-to-end tests put that
text in ~/.ssh/config and drive `offload` against the real sshd: an alias, a ProxyJump, ssh-agent.
"""
from __future__ import annotations

import getpass
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from conftest import register_host, run_offload
from procs import alive, stop_by_pid
from offload.errors import OffloadError
from offload.config.resolve import resolve, resolve_jump, split_destination, ssh_config_for
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


BROKEN_CONFIGS = [
    # (config text, what ssh -G says, what paramiko's parser says where there is no ssh client)
    ("Port\n", r'cannot read .*/\.ssh/config for box: .*/\.ssh/config line 1: no argument after keyword "port"',
     r"cannot read .*/\.ssh/config: Unparsable line Port"),
    ("Host box\n    Port twenty-two\n",
     r"cannot read .*/\.ssh/config for box: .*/\.ssh/config line 2: Bad port 'twenty-two'",
     r"bad Port 'twenty-two' for box in ~/\.ssh/config"),
]


@pytest.mark.parametrize("ssh_client", ["ssh", "none"])
@pytest.mark.parametrize("config_text, by_ssh, by_paramiko", BROKEN_CONFIGS)
def test_a_broken_ssh_config_is_one_clear_line(offload_home, tmp_path, config_text, by_ssh, by_paramiko, ssh_client):
    write_ssh_config(offload_home.home, config_text)
    (offload_home.path / "hosts.yaml").write_text("hosts:\n  box: {user: u}\n")
    result = run_offload("hosts", "list", env={} if ssh_client == "ssh" else {"PATH": str(path_without_ssh(tmp_path))})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = stderr_lines(result)
    assert re.search(by_ssh if ssh_client == "ssh" else by_paramiko, line), line


def path_without_ssh(tmp_path: Path) -> Path:
    """A PATH directory with no `ssh` in it: a laptop without the OpenSSH client."""
    empty = tmp_path / "bin-without-ssh"
    empty.mkdir(exist_ok=True)
    return empty


# --- what `ssh -G` resolves, read from real config files -------------------------------------------

def test_ssh_g_defaults_are_not_taken_for_the_configs_settings(offload_home, monkeypatch):
    """`ssh -G` prints OpenSSH's defaults (the passwd user, port 22, ~/.ssh/id_rsa and more) for an alias the
    config says nothing about: none of them may pass for a setting, or they would beat offload's defaults."""
    monkeypatch.setenv("LOGNAME", "dave")
    write_ssh_config(offload_home.home, "Host other\n    User olga\n    Port 2200\n    IdentityFile ~/.ssh/id_other\n")
    assert ssh_config_for("box") == {}
    target = resolve("box", {})
    assert (target.hostname, target.port, target.user, target.identity_files) == ("box", 22, "dave", ())
    assert (target.proxy_jump, target.proxy_command) == (None, None)


def test_included_files_resolve_as_openssh_resolves_them(offload_home):
    """paramiko's parser ignores Include: the box defined in an included file (relative to ~/.ssh, or from ~)
    would resolve to its own name, port 22 and the local user."""
    ssh_dir = offload_home.home / ".ssh"
    for folder, alias, port in (("config.d", "relbox", 2201), ("more.d", "tildebox", 2202)):
        (ssh_dir / folder).mkdir()
        (ssh_dir / folder / "gpu.conf").write_text(
            f"Host {alias}\n    HostName 192.0.2.{port - 2200}\n    User bob\n    Port {port}\n"
            f"    IdentityFile ~/.ssh/id_{alias}\n")
    write_ssh_config(offload_home.home,
                     "Include config.d/*\nInclude ~/.ssh/more.d/*.conf\n\nHost *\n    User fallback\n")
    relative, tilde, other = resolve("relbox", {}), resolve("tildebox", {}), resolve("elsewhere", {})
    assert (relative.hostname, relative.port, relative.user) == ("192.0.2.1", 2201, "bob")
    assert relative.identity_files == (f"{ssh_dir}/id_relbox",) and relative.identity_from_config
    assert (tilde.hostname, tilde.port, tilde.user) == ("192.0.2.2", 2202, "bob")
    assert (other.hostname, other.port, other.user) == ("elsewhere", 22, "fallback")  # the main file still counts


def test_tokens_are_expanded_with_the_final_host_port_and_user(offload_home, monkeypatch):
    """%h is the HostName, %p and %r what the precedence chose (hosts.yaml's port here), %n the alias, %% a %."""
    monkeypatch.setenv("LOGNAME", "dave")
    write_ssh_config(offload_home.home, "Host gpu\n    HostName gpu.lan\n    User alice\n"
                                        "    IdentityFile ~/.ssh/%h_%r_%u.key\n"
                                        "    ProxyCommand relay --to %h:%p --as %r --alias %n --literal 100%%\n")
    target = resolve("gpu", {"port": 2200})
    assert target.identity_files == (f"{offload_home.home}/.ssh/gpu.lan_alice_dave.key",)
    assert target.proxy_command == "relay --to gpu.lan:2200 --as alice --alias gpu --literal 100%"


def test_an_unknown_token_is_one_clear_line(offload_home):
    write_ssh_config(offload_home.home, "Host gpu\n    ProxyCommand nc %h %z\n")
    (offload_home.path / "hosts.yaml").write_text("hosts:\n  gpu: {}\n")
    result = run_offload("hosts", "list")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = stderr_lines(result)
    assert "ProxyCommand 'nc %h %z' for gpu in" in line and "unknown token %z" in line, line


@pytest.mark.parametrize("entry, expected", [
    ({}, ("nc gpu.lan 22", None)),
    ({"proxy_jump": "bastion"}, (None, "bastion")),  # hosts.yaml comes before the config file
    ({"proxy_jump": "none"}, (None, "none")),  # as `ssh -J none`: neither a jump nor the config's command
])
def test_a_proxy_jump_from_hosts_yaml_overrides_the_configs_proxy_command(offload_home, entry, expected):
    write_ssh_config(offload_home.home, "Host gpu\n    HostName gpu.lan\n    ProxyCommand nc %h %p\n")
    target = resolve("gpu", entry)
    assert (target.proxy_command, target.proxy_jump) == expected


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
    # in a process of its own: the link keeper would reuse the connection the agent's key opened, as ssh's
    # ControlMaster does
    without_agent = run_offload("run", "report.py", cwd=project, env={"OFFLOAD_KEEP_ALIVE": "0"})
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


def test_a_box_defined_in_an_included_file_is_added_and_runs_there(offload_home, sshd, project, tmp_path):
    """`Include ~/.ssh/config.d/*`, as a new user writes it, with the box in the included file: offload must
    reach it at its HostName, Port and User with its IdentityFile, not fall back to this machine's CPU."""
    (offload_home.home / ".ssh" / "config.d").mkdir()
    (offload_home.home / ".ssh" / "config.d" / "gpu").write_text(alias_config(sshd, "incbox"))
    write_ssh_config(offload_home.home, "Include ~/.ssh/config.d/*\n")
    added = run_offload("hosts", "add", "gpu", "incbox", "--yes", "--python", sys.executable,
                        "--workdir", str(tmp_path / "remote"))
    assert added.returncode == 0, added.stderr
    assert f"added gpu ({sshd.user}@{sshd.host}:{sshd.port})" in added.stderr, added.stderr

    ran = run_offload("run", "report.py", "included", cwd=project)
    assert ran.returncode == 0, ran.stderr
    assert "running locally" not in ran.stderr
    assert '"argv": ["included"]' in ran.stdout and str(tmp_path / "remote") in ran.stdout  # it ran on the host


RELAY = """\
import json, os, select, socket, sys
marker, host, port, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
with open(marker, "a") as f:
    f.write(json.dumps({"pid": os.getpid(), "tokens": tokens}) + "\\n")
server = socket.create_connection((host, port))
while True:
    ready, _, _ = select.select([0, server], [], [])
    data = os.read(0, 65536) if 0 in ready else server.recv(65536)
    if not data:
        break
    if 0 in ready:
        server.sendall(data)
    else:
        os.write(1, data)
"""


def test_a_proxy_command_carries_the_connection(offload_home, sshd, project, tmp_path):
    """The HostName does not even resolve: only the ProxyCommand (a relay written here, started through the
    shell as ssh starts it) reaches the sshd. Its tokens are expanded as OpenSSH expands them, and each relay
    offload started has ended once offload is done."""
    relay, marker = tmp_path / "relay.py", tmp_path / "relay.jsonl"
    relay.write_text(RELAY)
    # the redirection needs the shell that ssh runs a ProxyCommand with (an argv split by shlex would pass it on)
    proxy = (f"{shlex.quote(sys.executable)} {relay} {marker} {sshd.host} {sshd.port} %h %p %r %n "
             f"2>>{tmp_path}/relay.err")
    write_ssh_config(offload_home.home, f"Host proxied\n    HostName box.invalid\n    Port 2222\n    User {sshd.user}\n"
                                        f"    IdentityFile {sshd.client_key_path}\n    ProxyCommand {proxy}\n")
    try:
        added = run_offload("hosts", "add", "gpu", "proxied", "--yes", "--python", sys.executable,
                            "--workdir", str(tmp_path / "remote"))
        assert added.returncode == 0, added.stderr
        assert (offload_home.path / "known_hosts").read_text() == f"[box.invalid]:2222 {sshd.host_public_key}\n"
        ran = run_offload("run", "report.py", "proxied", cwd=project)
        assert ran.returncode == 0, ran.stderr
        assert "running locally" not in ran.stderr and '"argv": ["proxied"]' in ran.stdout
    finally:
        run_offload("hosts", "disconnect")  # the link keeper kept the run's connection, and with it the relay
        relays = [json.loads(line) for line in marker.read_text().splitlines()] if marker.exists() else []
        lingering = [r["pid"] for r in relays if not wait_for(lambda: not alive(r["pid"]), 5)]
        for pid in lingering:
            stop_by_pid(pid)
    assert [r["tokens"] for r in relays] == [["box.invalid", "2222", sshd.user, "proxied"]] * 2  # add, then run
    assert lingering == [], "offload left its ProxyCommand running"


@pytest.mark.parametrize("proxy, code, says", [
    ("no-such-proxy %h %p", 1, "cannot reach box: ProxyCommand `no-such-proxy gone.invalid 22` exited with 127: "),
    ("sh -c 'echo gateway refused >&2; exit 1'", 0, "box ({user}@gone.invalid:22) is unreachable (ProxyCommand "),
])
def test_a_proxy_command_that_fails_says_why(offload_home, project, proxy, code, says):
    """A proxy that is not there is a config to fix: one line, no run. One that ran and gave up means the host
    is out of reach: the run is local, with the proxy's own last words. Either is known when the proxy ends,
    not when the connect timeout runs out."""
    write_ssh_config(offload_home.home, f"Host gone\n    HostName gone.invalid\n    ProxyCommand {proxy}\n")
    (offload_home.path / "hosts.yaml").write_text("hosts:\n  box: {hostname: gone}\n")
    started = time.monotonic()
    result = run_offload("run", "--connect-timeout", "60", "report.py", cwd=project)
    assert time.monotonic() - started < 30
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    line = stderr_lines(result)[0]
    assert says.format(user=getpass.getuser()) in line, line
    if code:
        assert len(stderr_lines(result)) == 1 and "not found" in line and not list(project.glob(".offload/runs/*"))
    else:
        assert line.endswith("exited with 1: gateway refused): running locally on this machine's CPU instead"), line
