"""A real OpenSSH server on loopback for tests, plus hosts that misbehave (silent, closed).

Every process started here is stopped by pid, and every wait has a deadline.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it; on a bare container it is missing
LOOPBACK = "127.0.0.1"
START_DEADLINE_S = 10.0  # from spawn to a served SSH-2.0 banner
STOP_DEADLINE_S = 5.0  # for SIGTERM to work before SIGKILL, and for SIGKILL to land
BIND_ATTEMPTS = 3  # another test run may take our free port between free_port() and sshd's bind
POLL_S = 0.02


class SshServerError(RuntimeError):
    """sshd would not start or stop; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A loopback port where a connect is refused: nothing listens there."""
    return free_port()


def generate_keypair(path: Path) -> str:
    """Write an ed25519 key without passphrase to path (and path.pub); return the public key line."""
    path = Path(path)
    subprocess.run(
        [SSH_KEYGEN, "-t", "ed25519", "-N", "", "-q", "-C", "offload-test", "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
    )
    key_type, key_base64 = Path(f"{path}.pub").read_text().split()[:2]
    return f"{key_type} {key_base64}"


@functools.lru_cache(maxsize=None)
def sshd_version() -> tuple[int, int]:
    """(major, minor) of SSHD, read from its -V banner ("OpenSSH_9.2, OpenSSL ...")."""
    banner = subprocess.run([SSHD, "-V"], capture_output=True, text=True, timeout=10).stderr
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", banner)
    if match is None:
        raise SshServerError(f"cannot read the OpenSSH version of {SSHD}: {banner!r}")
    return int(match[1]), int(match[2])


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll condition until it holds (True) or timeout_s passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


class Proc(NamedTuple):
    pid: int
    ppid: int
    state: str  # 'Z' for a zombie: dead, only waiting for its parent to reap it
    start_ticks: int  # with pid, names one process even if the pid is reused later
    comm: str


def read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]  # comm may hold spaces and parentheses
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 of proc(5)
    return Proc(pid, int(fields[1]), fields[0], int(fields[19]), comm)


def descendants(root_pid: int) -> list[Proc]:
    """Live descendants of root_pid, parents before their children."""
    procs = [read_proc(int(name)) for name in os.listdir("/proc") if name.isdigit()]
    children: dict[int, list[Proc]] = {}
    for proc in procs:
        if proc is not None and proc.state != "Z":
            children.setdefault(proc.ppid, []).append(proc)
    found, frontier = [], [root_pid]
    while frontier:
        level = [child for pid in frontier for child in children.get(pid, [])]
        found.extend(level)
        frontier = [proc.pid for proc in level]
    return found


def still_running(proc: Proc) -> bool:
    """proc runs (a zombie is dead: it only waits to be reaped, by pid 1 if orphaned) under the same pid."""
    now = read_proc(proc.pid)
    return now is not None and now.state != "Z" and now.start_ticks == proc.start_ticks


def kill_and_wait(procs: list[Proc]) -> None:
    """SIGKILL procs, children first, each only if its pid still names the same process."""
    for proc in reversed(procs):
        if still_running(proc):
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if not wait_for(lambda: not any(still_running(proc) for proc in procs), STOP_DEADLINE_S):
        alive = [proc.pid for proc in procs if still_running(proc)]
        raise SshServerError(f"pids {alive} still alive {STOP_DEADLINE_S}s after SIGKILL")


def is_sshd(proc: Proc) -> bool:
    return proc.comm.startswith("sshd")  # "sshd"; "sshd-session" and "sshd-auth" on OpenSSH 9.8+


def read_banner(host: str, port: int, timeout_s: float) -> bytes:
    """The first line a server sends after a TCP connect; b'' if it refuses, closes or stays silent."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            received = b""
            while b"\n" not in received:
                chunk = sock.recv(256)
                if not chunk:
                    break
                received += chunk
            return received.split(b"\n")[0]
    except OSError:  # refused, reset, or socket.timeout
        return b""


@dataclass
class SshServer:
    """One sshd on 127.0.0.1 with its own host key, client key and config, all inside directory.

    With netns (a Linux network namespace, `ip netns add`), sshd runs in that namespace and listens on
    host, an address there; give it a fixed port: nothing else listens in a fresh namespace, and
    free_port() would only know about loopback ports of the test's own namespace.
    """

    directory: Path
    host: str = LOOPBACK
    port: int = field(default_factory=free_port)
    user: str = field(default_factory=lambda: pwd.getpwuid(os.getuid()).pw_name)  # not $USER: tests move env
    netns: str | None = None
    host_key_path: Path = field(init=False)
    host_public_key: str = field(init=False)  # "ssh-ed25519 AAAA..."
    client_key_path: Path = field(init=False)  # private key; its .pub is in authorized_keys
    client_public_key: str = field(init=False)
    authorized_keys_path: Path = field(init=False)
    config_path: Path = field(init=False)
    pid_file_path: Path = field(init=False)
    log_path: Path = field(init=False)
    remote_home: Path = field(init=False)  # $HOME of the sessions: the user's real home stays untouched
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _orphans: list[Proc] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()  # sshd wants absolute paths
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host_key_path = self.directory / "ssh_host_ed25519_key"
        self.client_key_path = self.directory / "client_ed25519_key"
        self.authorized_keys_path = self.directory / "authorized_keys"
        self.config_path = self.directory / "sshd_config"
        self.pid_file_path = self.directory / "sshd.pid"
        self.log_path = self.directory / "sshd.log"
        self.remote_home = self.directory / "remote_home"
        self.remote_home.mkdir(mode=0o700, exist_ok=True)
        self.host_public_key = generate_keypair(self.host_key_path)
        self.client_public_key = generate_keypair(self.client_key_path)
        self.authorized_keys_path.write_text(self.client_public_key + "\n")

    @property
    def known_hosts_line(self) -> str:
        """The line a known_hosts file needs to trust this server (non-22 ports go in brackets)."""
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def write_config(self) -> None:
        # Newer sshd blocks a source address after killed connections and banner probes.
        penalties = "PerSourcePenalties no\n" if sshd_version() >= (9, 8) else ""
        self.config_path.write_text(penalties + f"""\
Port {self.port}
ListenAddress {self.host}
AddressFamily inet
HostKey {self.host_key_path}
PidFile {self.pid_file_path}
AuthorizedKeysFile {self.authorized_keys_path}
StrictModes no
UsePAM no
PermitRootLogin yes
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
PrintLastLog no
UseDNS no
LogLevel VERBOSE
ClientAliveInterval 0
LoginGraceTime 30
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
# Sessions get an empty home: what they write under ~ stays in the test's directory, and the
# user's own ~/.bashrc (which bash sources for ssh commands) neither slows nor pollutes them.
# The working directory at login is still the passwd home; sshd has no option to move it.
SetEnv HOME={self.remote_home}
""")

    def start(self) -> SshServer:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        sshd_argv = [SSHD, "-D", "-e", "-f", str(self.config_path)]
        if self.netns is not None:
            sshd_argv = ["ip", "netns", "exec", self.netns, *sshd_argv]  # execs sshd: the pid stays sshd's
        # In a namespace the port is fixed and the namespace is ours alone: no other run can take it.
        for attempt in range(BIND_ATTEMPTS if self.netns is None else 1):
            if attempt:
                self.port = free_port()
            self.write_config()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    sshd_argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                )
            if wait_for(lambda: self._serving() or self.process.poll() is not None, START_DEADLINE_S):
                if self.process.poll() is None:
                    return self
                if "Address already in use" in self.log_tail():
                    continue
            break
        exit_code = self.process.poll()
        self.stop()
        what = f"exited with code {exit_code}" if exit_code is not None else (
            f"served no SSH banner within {START_DEADLINE_S}s")
        raise SshServerError(
            f"sshd on {self.host}:{self.port} {what}; log {self.log_path}:\n{self.log_tail()}"
        )

    def _serving(self) -> bool:
        # The log line proves that our sshd holds the port, not some other test run's server.
        listening = f"Server listening on {self.host} port {self.port}." in self.log_tail()
        return listening and read_banner(self.host, self.port, timeout_s=1.0).startswith(b"SSH-2.0")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _below_listener(self) -> list[Proc]:
        if self.process is None or self.process.poll() is not None:
            return []
        return descendants(self.process.pid)

    def connection_pids(self) -> list[int]:
        """Pids of the sshd processes serving connections: every sshd below the listener."""
        return [proc.pid for proc in self._below_listener() if is_sshd(proc)]

    def kill_connections(self) -> list[int]:
        """SIGKILL every connection, as a dropped link would end it; the listener stays up.

        Commands the sessions ran are left running, as on a real host; stop() ends them.
        """
        below = self._below_listener()
        connections = [proc for proc in below if is_sshd(proc)]
        self._orphans.extend(proc for proc in below if not is_sshd(proc))
        kill_and_wait(connections)
        return [proc.pid for proc in connections]

    def stop(self) -> None:
        """End the listener, its connections, and whatever their sessions started; by pid."""
        if self.process is None:
            return
        # Children first, while the listener still runs to reap them; once it is gone they
        # would be reparented away and no longer found as its descendants.
        below = self._below_listener()
        try:
            kill_and_wait(below + self._orphans)
            # Let the listener reap its children, or they stay zombies under an init that may not.
            direct = [proc.pid for proc in below if proc.ppid == self.process.pid]
            wait_for(lambda: all(read_proc(pid) is None for pid in direct), STOP_DEADLINE_S)
        finally:
            self._orphans.clear()
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=STOP_DEADLINE_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=STOP_DEADLINE_S)

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SilentListener:
    """A host that accepts TCP connections and never says a word (hangs before the SSH banner)."""

    def __init__(self) -> None:
        self.host = LOOPBACK
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.bind((self.host, 0))
        self._server.listen(16)
        self._server.settimeout(0.05)  # so the accept loop notices close() promptly
        self.port: int = self._server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="silent-listener", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=STOP_DEADLINE_S)
        self._server.close()
        for connection in self.accepted:
            connection.close()

    def __enter__(self) -> SilentListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
