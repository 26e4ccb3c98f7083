"""Shared fixtures: a real sshd on loopback, misbehaving hosts, and an isolated OFFLOAD_HOME and HOME."""

from __future__ import annotations

import errno
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sshd_server import SilentListener, SshServer

# A suite started in the background of a shell (`make test &`, nohup) inherits SIGINT ignored, and so would every
# offload it starts: the Ctrl-C tests would send a signal nobody can take. A handler of ours is reset at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One sshd for the whole session; tests that kill or disturb it use fresh_sshd instead."""
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def fresh_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd of this test's own."""
    with SshServer(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def silent_listener() -> Iterator[SilentListener]:
    with SilentListener() as listener:
        yield listener


@dataclass(frozen=True)
class OffloadHome:
    path: Path  # $OFFLOAD_HOME: offload's own state
    home: Path  # $HOME, with an empty ~/.ssh (0700)
    installed_agent: Path | None = None  # the agent as installed on a host, for register_host's default workdirs


@pytest.fixture(scope="session")
def installed_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent as offload installs it in a host's workdir (its tarball extracted into .agent/HASH, as
    install_command does), built once: the product keeps an installed agent per workdir and version, so a
    test whose workdir has it starts the agent at once instead of paying a failed start, an upload and an
    install (~0.1 s). Installing itself is tested where a test gives its own workdir (test_remote_failures)."""
    from offload.transport.agent import agent_hash, agent_tarball

    installed = tmp_path_factory.mktemp("installed-agent") / agent_hash()
    with tarfile.open(fileobj=io.BytesIO(agent_tarball())) as tar:
        tar.extractall(installed)
    return installed


@pytest.fixture
def offload_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed_agent: Path) -> Iterator[OffloadHome]:
    """Isolated OFFLOAD_HOME and HOME, so ~/.ssh/config and ~/.ssh/known_hosts are the test's own.

    The OpenSSH `ssh` binary ignores $HOME (it reads the passwd entry), so code that runs it must
    pass -F and -o UserKnownHostsFile explicitly; paramiko and os.path.expanduser follow $HOME.
    """
    offload_home = OffloadHome(path=tmp_path / "offload_home", home=tmp_path / "home", installed_agent=installed_agent)
    offload_home.path.mkdir()
    (offload_home.home / ".ssh").mkdir(mode=0o700, parents=True)
    monkeypatch.setenv("OFFLOAD_HOME", str(offload_home.path))
    monkeypatch.setenv("HOME", str(offload_home.home))
    yield offload_home
    stop_keeper(offload_home.path)


KEEPER_GRACE_S = 5.0  # for a SIGTERMed keeper to close its links and remove its pid file


def stop_keeper(offload_home_path: Path) -> None:
    """Stop, by the pid it wrote, the link keeper a test's `offload sync` left running; fail if it lingers.

    SIGTERM first, so it closes its links (the agents on the host say bye) and removes its pid file, its last
    act; then SIGKILL, which spares each test the ~0.1 s of the interpreter's own exit after that. A keeper
    that ignores SIGTERM is SIGKILLed after KEEPER_GRACE_S, as before.
    """
    from procs import alive
    from sshd_server import wait_for

    pid_file = offload_home_path / "keeper.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        for sig, done in ((signal.SIGTERM, lambda: not pid_file.exists()), (signal.SIGKILL, lambda: False)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            wait_for(lambda: done() or not alive(pid), KEEPER_GRACE_S)
        assert not alive(pid), f"the link keeper {pid} did not stop"


# --- offload-level helpers: drive the real entry point against the real sshd ---------------------

import io
import os
import shutil
import subprocess
import sys
import tarfile

import yaml

CLI_TIMEOUT_S = 120


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_offload(*args: str, cwd: Path | None = None, timeout: float = CLI_TIMEOUT_S, input: str | None = None,
                env: dict | None = None) -> CliResult:
    """Run `python -m offload ARGS` as a user would (a real process, its own stdin/stdout), with a deadline."""
    done = subprocess.run([sys.executable, "-m", "offload", *args], cwd=cwd, capture_output=True, timeout=timeout,
                          input=(input or "").encode(), env={**os.environ, **(env or {})})
    return CliResult(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def start_offload(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    """`python -m offload ARGS` in the background (stdout and stderr piped unless given): the caller stops it."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "offload", *args], cwd=cwd, **popen)


def register_host(offload_home: OffloadHome, server: SshServer, name: str = "box", trust_key: bool = True, **settings) -> dict:
    """Write a hosts.yaml entry for `server` (and its key into offload's known_hosts) directly; a default workdir
    (none in settings) has the agent installed already, as after a first run (see installed_agent)."""
    hosts_file = offload_home.path / "hosts.yaml"
    data = yaml.safe_load(hosts_file.read_text()) if hosts_file.exists() else {"hosts": {}}
    default_workdir = offload_home.path.parent / f"remote-{name}"
    if "workdir" not in settings and offload_home.installed_agent is not None:
        agent_dir = default_workdir / ".agent" / offload_home.installed_agent.name
        if not agent_dir.exists():
            shutil.copytree(offload_home.installed_agent, agent_dir)
    entry = {"hostname": server.host, "port": server.port, "user": server.user,
             "identity_file": str(server.client_key_path), "python": sys.executable,
             "workdir": str(default_workdir), **settings}
    data["hosts"][name] = {k: v for k, v in entry.items() if v is not None}
    hosts_file.write_text(yaml.safe_dump(data, sort_keys=False))
    if trust_key:
        with open(offload_home.path / "known_hosts", "a") as f:
            f.write(server.known_hosts_line + "\n")
    return data["hosts"][name]


# Holds the host until the file named by its argument appears (or two minutes pass).
HOLD = ("import os, sys, time\n"
        "deadline = time.time() + 120\n"
        "while not os.path.exists(sys.argv[1]) and time.time() < deadline:\n"
        "    time.sleep(0.05)\n")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small project directory with a script that reports what it received."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "report.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(),\n"
        "                  'env': {k: os.environ.get(k) for k in ('OFFLOAD_RUN_ID', 'PYTHONUNBUFFERED', 'OFFLOAD_TEST_ENV')}}))\n"
        "sys.exit(int(os.environ.get('EXIT_CODE', '0')))\n")
    return root


@pytest.fixture
def box(offload_home: OffloadHome, sshd: SshServer) -> dict:
    """The session sshd registered as host `box`, key trusted, workdir in this test's tmp dir."""
    return register_host(offload_home, sshd)


@pytest.fixture
def link(offload_home, sshd):
    """One real SSH connection to the session sshd (registered as `box`) and one remote agent, reused for every
    sync of the test: (agent, the host's workdir)."""
    from offload.transport import agent as agents
    from offload.transport import ssh
    from offload.config.hosts import load
    from offload.config.resolve import resolve

    register_host(offload_home, sshd)
    target = resolve("box", load().get("box"))
    client = ssh.connect(target, 10)
    try:
        agent = agents.start_remote(client, target)
    except BaseException:
        client.close()
        raise
    yield agent, target.workdir
    agent.close()
    client.close()


# --- a small real filesystem, for what a full disk does ---------------------------------------------

@contextmanager
def small_disk_at(mount_point: Path, size: str = "1m") -> Iterator[Path]:
    """A real filesystem of `size` at mount_point (a tmpfs of the test's own: CI runs as root, which may mount
    one), unmounted afterwards."""
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], check=True, timeout=10)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True, timeout=10)


def fill_disk(directory: Path) -> None:
    """Write zeros into directory until its filesystem is full."""
    with open(directory / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
