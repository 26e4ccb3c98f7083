"""The host registry: `offload hosts add|list|remove` against a real sshd, and hosts.yaml read with line numbers.

Bad input of every kind ends in one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import register_host, run_offload
from procs import alive, stop_by_pid
from sshd_server import closed_port
from test_host_facts import table_rows


@pytest.fixture(autouse=True)
def no_outside_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def stderr_lines(result) -> list:
    return [line for line in result.stderr.splitlines() if line.strip()]


def one_error_line(result, code: int = 1) -> str:
    """The single stderr line of a refused command."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("offload: error: "), lines[0]
    return lines[0]


def ssh_keygen_fingerprint(public_key: Path) -> str:
    """What `ssh-keygen -lf` says the key's SHA256 fingerprint is."""
    done = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.split()[1]


def add_args(name: str, server, *extra: str) -> list:
    return ["hosts", "add", name, f"{server.user}@{server.host}", "--port", str(server.port),
            "--identity", str(server.client_key_path), "--python", sys.executable, *extra]


def read_hosts(offload_home) -> dict:
    return yaml.safe_load((offload_home.path / "hosts.yaml").read_text())["hosts"]


def test_add_shows_the_real_fingerprint_and_saves_the_key_in_openssh_format(offload_home, sshd, project, tmp_path):
    result = run_offload(*add_args("box", sshd, "--workdir", str(tmp_path / "remote"), "--gpus", "2", "--yes"))
    assert result.returncode == 0, result.stderr
    assert ssh_keygen_fingerprint(Path(f"{sshd.host_key_path}.pub")) in result.stderr
    assert f"added box ({sshd.user}@{sshd.host}:{sshd.port})" in result.stderr

    known_hosts = offload_home.path / "known_hosts"
    assert known_hosts.read_text() == sshd.known_hosts_line + "\n"
    found = subprocess.run(["ssh-keygen", "-F", f"[{sshd.host}]:{sshd.port}", "-f", str(known_hosts)],
                           capture_output=True, text=True, timeout=10)
    assert found.returncode == 0 and sshd.host_public_key in found.stdout  # OpenSSH itself reads the file

    assert read_hosts(offload_home) == {"box": {
        "hostname": sshd.host, "user": sshd.user, "port": sshd.port, "identity_file": str(sshd.client_key_path),
        "python": sys.executable, "workdir": str(tmp_path / "remote"), "gpus": 2}}
    ran = run_offload("run", "--nproc-per-node", "1", "report.py", cwd=project)  # not torchrun for gpus: 2
    assert ran.returncode == 0, ran.stderr
    assert str(tmp_path / "remote") in ran.stdout


def test_add_without_a_terminal_or_yes_saves_nothing(offload_home, sshd):
    result = run_offload(*add_args("box", sshd))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    fingerprint_line, error = stderr_lines(result)
    assert ssh_keygen_fingerprint(Path(f"{sshd.host_key_path}.pub")) in fingerprint_line
    assert error.startswith("offload: error: cannot confirm the host key of box without a terminal"), error
    assert "--yes" in error
    assert not (offload_home.path / "hosts.yaml").exists()
    assert not (offload_home.path / "known_hosts").exists()


def test_a_key_already_in_users_known_hosts_is_accepted(offload_home, sshd, project, tmp_path):
    """Even hashed (HashKnownHosts yes, Debian's default), as ssh-keygen -H writes it."""
    user_known_hosts = offload_home.home / ".ssh" / "known_hosts"
    user_known_hosts.write_text(sshd.known_hosts_line + "\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(user_known_hosts)], capture_output=True, timeout=10, check=True)
    assert user_known_hosts.read_text().startswith("|1|")

    result = run_offload(*add_args("box", sshd, "--workdir", str(tmp_path / "remote")))  # no --yes, no terminal
    assert result.returncode == 0, result.stderr
    assert not (offload_home.path / "known_hosts").exists()  # nothing new to remember
    ran = run_offload("run", "report.py", cwd=project)
    assert ran.returncode == 0, ran.stderr


def test_a_host_that_is_down_is_saved_with_a_warning(offload_home):
    port = closed_port()
    result = run_offload("hosts", "add", "later", f"alice@127.0.0.1:{port}", "--yes")
    assert result.returncode == 0, result.stderr
    [warning] = stderr_lines(result)
    assert "warning: later is unreachable now (connection refused)" in warning
    assert "`offload hosts check later`" in warning
    assert read_hosts(offload_home) == {"later": {"hostname": "127.0.0.1", "user": "alice", "port": port}}
    assert not (offload_home.path / "known_hosts").exists()


def test_without_offload_home_the_registry_lives_in_the_platform_config_dir(offload_home, monkeypatch, tmp_path):
    monkeypatch.delenv("OFFLOAD_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = run_offload("hosts", "add", "later", f"127.0.0.1:{closed_port()}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "xdg" / "offload" / "hosts.yaml").is_file()
    assert "later" in run_offload("hosts", "list").stdout


def test_list_shows_every_host_with_the_default_first(offload_home, sshd, fresh_sshd):
    register_host(offload_home, sshd, name="first")
    register_host(offload_home, fresh_sshd, name="second", gpus=4)
    result = run_offload("hosts", "list")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert lines[0] == ["name", "address", "python", "workdir", "gpus"]
    assert lines[1][:3] == ["first", "(default)", f"{sshd.user}@{sshd.host}:{sshd.port}"]
    assert lines[2][0] == "second" and lines[2][1] == f"{fresh_sshd.user}@{fresh_sshd.host}:{fresh_sshd.port}"
    assert lines[2][-1] == "4"


def test_remove_forgets_the_host_and_keeps_its_key(offload_home, sshd):
    register_host(offload_home, sshd, name="first")
    register_host(offload_home, sshd, name="second")
    result = run_offload("hosts", "remove", "first")
    assert result.returncode == 0, result.stderr
    assert list(read_hosts(offload_home)) == ["second"]
    assert sshd.known_hosts_line in (offload_home.path / "known_hosts").read_text()


@pytest.mark.parametrize("args, expected", [
    (["run", "--host", "nope", "report.py"], "unknown host 'nope' (known: box)"),
    (["hosts", "remove", "nope"], "unknown host 'nope' (known: box)"),
    (["hosts", "check", "nope"], "unknown host 'nope' (known: box)"),
    (["hosts", "add", "box", "127.0.0.1"], "host box is already registered"),
    (["hosts", "add", "bad name", "127.0.0.1"], "bad host name 'bad name'"),
    (["hosts", "add", "x", "127.0.0.1", "--gpus", "0"], "gpus must be at least 1, not 0"),
    (["hosts", "add", "x", "127.0.0.1", "--port", "70000"], "port must be between 1 and 65535, not 70000"),
    (["hosts", "add", "x", "127.0.0.1:ssh"], "bad port in '127.0.0.1:ssh'"),
])
def test_bad_names_and_values_are_one_line(offload_home, sshd, project, args, expected):
    register_host(offload_home, sshd)
    line = one_error_line(run_offload(*args, cwd=project))
    assert expected in line, line
    assert list(read_hosts(offload_home)) == ["box"]


MALFORMED = [
    # (hosts.yaml text, line the error names, what it says)
    ("hosts:\n  box:\n    hostname: a\n    port: [22\n", 4, "not valid YAML"),  # not 5, the end of the file
    ("hosts:\n  box:\n\thostname: a\n", 3, "not valid YAML: found character '\\t'"),
    ("hosts:\n  box:\n    hostname: a\n    hostnmae: b\n", 4, "host box: unknown key 'hostnmae'"),
    ("hosts:\n  box:\n    hostname: a\n    port: abc\n", 4, "host box: port must be a port number, not 'abc'"),
    ("hosts:\n  box:\n    hostname: a\n    gpus: 0\n", 4, "host box: gpus must be at least 1, not 0"),
    ("hosts:\n  box:\n    env: [A, B]\n", 3, "host box: env must be a mapping of environment variables"),
    ("hosts:\n  box:\n    hostname: a\n  bad name:\n    hostname: b\n", 4, "bad host name 'bad name'"),
    ("hosts:\n  4090:\n    hostname: a\n", 2, "host name 4090 is not text to YAML: put it in quotes"),
    ("host:\n  box:\n    hostname: a\n", 1, "unknown key 'host' (only `hosts:`)"),
    ("hosts:\n  box: 192.168.1.5\n", 2, "host box: expected a mapping of settings"),
    ("- box\n", 1, "expected a mapping `hosts:`"),
    # env, and settings that become a path or an argument: what would stop the supervisor, or reach the job changed
    ("hosts:\n  box:\n    env:\n      OK: a\n      A=B: x\n", 5, "host box: env name 'A=B' is not a variable name"),
    ('hosts:\n  box:\n    env:\n      "": x\n', 4, "host box: env name '' is not a variable name"),
    ('hosts:\n  box:\n    env:\n      "A\\0B": x\n', 4, "host box: env name 'A\\x00B' is not a variable name"),
    ("hosts:\n  box:\n    env:\n      TOKEN: 123\n", 4, "host box: env.TOKEN must be a string (quote it): YAML reads it as a number"),
    ("hosts:\n  box:\n    env:\n      DEBUG: yes\n", 4, "host box: env.DEBUG must be a string (quote it): YAML reads it as yes/no"),
    ("hosts:\n  box:\n    env:\n      TOKEN:\n", 4, "host box: env.TOKEN must be a string (quote it): YAML reads it as empty"),
    ('hosts:\n  box:\n    env:\n      TOKEN: "ab\\0c"\n', 4, "host box: env.TOKEN contains a NUL character"),
    ("hosts:\n  box:\n    env:\n      1: x\n", 4, "host box: env name 1 is not text to YAML: put it in quotes"),
    ('hosts:\n  box:\n    hostname: a\n    python: "/usr/bin/python3\\n"\n', 4, "host box: python must be one line"),
    ("hosts:\n  box:\n    workdir: |\n      /scratch/w\n", 3, "host box: workdir must be one line, not '/scratch/w\\n'"),
    ('hosts:\n  box:\n    hostname: "a\\nb"\n', 3, "host box: hostname must be one line"),
    ('hosts:\n  box:\n    user: "al\\0ice"\n', 3, "host box: user contains a NUL character"),
    ("hosts:\n  box:\n    hostname: a\n    user: al\0ice\n", 4, "not valid YAML: unacceptable character #x0000"),
]


@pytest.mark.parametrize("text, line_number, message", MALFORMED)
def test_a_malformed_hosts_yaml_names_file_and_line(offload_home, text, line_number, message):
    (offload_home.path / "hosts.yaml").write_text(text)
    line = one_error_line(run_offload("hosts", "list"))
    assert f"{offload_home.path / 'hosts.yaml'}:{line_number}: " in line, line
    assert message in line, line


def test_a_malformed_hosts_yaml_stops_a_run_before_anything_starts(offload_home, project):
    (offload_home.path / "hosts.yaml").write_text("hosts:\n  box:\n    port: abc\n")
    line = one_error_line(run_offload("run", "report.py", cwd=project))
    assert "hosts.yaml:3: host box: port must be a port number" in line
    assert not list(project.glob(".offload/runs/*"))  # no local run either


def test_a_hosts_yaml_that_is_not_text_is_one_line(offload_home):
    (offload_home.path / "hosts.yaml").write_bytes(b"hosts:\n  box:\n    hostname: \xff\xfe\n")
    line = one_error_line(run_offload("hosts", "list"))
    assert "hosts.yaml is not UTF-8 text" in line


def test_a_relative_identity_path_still_works_from_the_project(offload_home, sshd, project, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "box_key").write_bytes(sshd.client_key_path.read_bytes())
    (keys / "box_key").chmod(0o600)
    added = run_offload("hosts", "add", "box", f"{sshd.user}@{sshd.host}", "--port", str(sshd.port),
                        "--identity", "keys/box_key", "--python", sys.executable, "--yes", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert read_hosts(offload_home)["box"]["identity_file"] == str(keys / "box_key")
    ran = run_offload("run", "report.py", cwd=project)
    assert ran.returncode == 0, ran.stderr


def test_hosts_list_shows_brackets_as_written(offload_home, sshd):
    """Table cells are plain text: a path like [/odd]/dir is not rich markup (it would have raised)."""
    register_host(offload_home, sshd, workdir="/tmp/[/odd]/dir")
    listed = run_offload("hosts", "list")
    assert listed.returncode == 0, listed.stderr
    assert "/tmp/[/odd]/dir" in listed.stdout


def test_hosts_check_says_which_reader_read_ssh_config(offload_home, sshd, tmp_path):
    """With the ssh client, `ssh -G` reads ~/.ssh/config and finds the box in an included file; without it
    (PATH holds no ssh), paramiko's parser stands in, says so, and cannot follow the Include."""
    ssh_dir = offload_home.home / ".ssh"
    (ssh_dir / "config.d").mkdir()
    alias = (f"HostName {sshd.host}\n    Port {sshd.port}\n    User {sshd.user}\n"
             f"    IdentityFile {sshd.client_key_path}\n")
    (ssh_dir / "config.d" / "inc").write_text(f"Host inc\n    {alias}")
    (ssh_dir / "config").write_text(f"Include config.d/*\n\nHost direct\n    {alias}")
    for name in ("direct", "inc"):
        register_host(offload_home, sshd, name=name, hostname=name, port=None, user=None, identity_file=None)
    no_ssh = tmp_path / "bin-without-ssh"
    no_ssh.mkdir()

    with_ssh = run_offload("hosts", "check")
    assert f"offload: ssh config: from `ssh -G` ({ssh_dir / 'config'})" in with_ssh.stderr, with_ssh.stderr
    assert with_ssh.returncode == 0, (with_ssh.stdout, with_ssh.stderr)

    without_ssh = run_offload("hosts", "check", env={"PATH": str(no_ssh)})
    assert f"offload: ssh config: from paramiko's parser (no ssh client) ({ssh_dir / 'config'})" in without_ssh.stderr
    assert without_ssh.returncode == 1, (without_ssh.stdout, without_ssh.stderr)
    rows = table_rows(without_ssh.stdout)
    assert (rows["direct"]["host"], rows["direct"]["auth"]) == (f"direct ({sshd.user}@{sshd.host}:{sshd.port})", "ok")
    assert rows["inc"]["reachable"] == "no: name not resolved", rows["inc"]


# --- hosts.yaml as written: its owner's only, and whole --------------------------------------------

def test_hosts_add_writes_hosts_yaml_for_its_owner_only(offload_home):
    result = run_offload("hosts", "add", "later", f"alice@127.0.0.1:{closed_port()}", "--yes")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((offload_home.path / "hosts.yaml").stat().st_mode) == 0o600  # its env often holds tokens
    assert [p.name for p in offload_home.path.iterdir()] == ["hosts.yaml"]  # no temporary file left beside it


def test_a_world_readable_hosts_yaml_becomes_0600_on_the_next_save(offload_home, sshd):
    register_host(offload_home, sshd, name="first", env={"HF_TOKEN": "hf_secret"})
    register_host(offload_home, sshd, name="second")
    hosts_file = offload_home.path / "hosts.yaml"
    hosts_file.chmod(0o644)
    inode_before = hosts_file.stat().st_ino
    result = run_offload("hosts", "remove", "second")
    assert result.returncode == 0, result.stderr
    after = hosts_file.stat()
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert after.st_ino != inode_before  # a new file renamed over the old one, never the old one rewritten
    kept = read_hosts(offload_home)
    assert list(kept) == ["first"] and kept["first"]["env"] == {"HF_TOKEN": "hf_secret"}


SAVES = 150
SAVER = """
import sys
from pathlib import Path
from offload.config import hosts
path, tag = Path(sys.argv[1]), sys.argv[2]
for round_number in range(int(sys.argv[3])):
    entries = {f"{tag}{i}": {"hostname": f"10.0.{i}.{round_number % 250}", "env": {"TOKEN": tag * 200}} for i in range(3)}
    hosts.Registry(path, entries).save()
"""


def test_saves_at_the_same_moment_never_leave_part_of_a_file(offload_home):
    """Two processes save over and over while this one reads: each save writes a temporary file of its own and
    renames it over hosts.yaml, so a reader (or a crash) only ever finds one whole registry or the other."""
    hosts_file = offload_home.path / "hosts.yaml"
    savers = [subprocess.Popen([sys.executable, "-c", SAVER, str(hosts_file), tag, str(SAVES)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for tag in ("a", "b")]
    partial = []
    try:
        while any(saver.poll() is None for saver in savers):
            try:
                text = hosts_file.read_text()
            except FileNotFoundError:  # before the first save
                continue
            if text.count("hostname:") != 3 or not text.endswith("\n"):
                partial.append(text)
        errors = [saver.stderr.read().decode() for saver in savers]
    finally:
        for saver in savers:
            stop_by_pid(saver.pid)
            saver.wait(timeout=10)
            assert not alive(saver.pid)
    assert [saver.returncode for saver in savers] == [0, 0], errors
    assert not partial, partial[:3]
    assert len(read_hosts(offload_home)) == 3
    assert stat.S_IMODE(hosts_file.stat().st_mode) == 0o600
    assert [p.name for p in offload_home.path.iterdir()] == ["hosts.yaml"]


def test_hosts_example_yaml_is_a_valid_registry_showing_every_key():
    """The example the README points to parses as hosts.yaml does, and shows every key a host can have."""
    from offload.config import hosts

    example = Path(__file__).resolve().parent.parent / "hosts.example.yaml"
    registry = hosts.load(example)
    (entry,) = registry.hosts.values()
    assert set(entry) == set(hosts.FIELDS)
