"""The thin end of `offload sync`: hand the command to the link keeper and relay what it prints.

Standard library only, and nothing of offload's heavier modules (home.py imports only os): a sync that
finds the keeper running costs a Python start-up and one local socket round trip on top of the sync itself.
None from `run` means "do it in this process instead" (keeper switched off, not startable, no private
place for its socket, another user's process at that socket, or a host key to confirm).
"""
from __future__ import annotations

import json
import os
import socket
import stat
import struct
import sys
import time

from offload import paths as home

PROTOCOL = 1
KEEP_ALIVE_ENV = "OFFLOAD_KEEP_ALIVE"  # seconds an idle keeper stays; 0 switches the keeper off
DEFAULT_KEEP_ALIVE_S = 600.0  # as ssh's ControlPersist is commonly set
START_DEADLINE_S = 10.0  # from spawning the keeper to its socket answering
SOCKET_PATH_MAX = 100  # AF_UNIX paths: 108 bytes on Linux, 104 on macOS
SOCKET_RECORD = "keeper.socket"  # in OFFLOAD_HOME: where the running keeper listens, whatever TMPDIR says now


def keep_alive_s() -> float:
    try:
        return max(0.0, float(os.environ.get(KEEP_ALIVE_ENV, DEFAULT_KEEP_ALIVE_S)))
    except ValueError:
        return DEFAULT_KEEP_ALIVE_S


def config_dir() -> str:
    return home.config_dir_name()


def socket_path() -> str | None:
    """Where a new keeper listens: in OFFLOAD_HOME; when that path is too long for a unix socket, in a private
    directory under the temp dir. None when that directory is not private: then there is no keeper."""
    path = os.path.join(config_dir(), "keeper.sock")
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        return path
    import hashlib
    import tempfile

    private = os.path.join(tempfile.gettempdir(), f"offload-{os.getuid()}")
    if not private_directory(private):
        return None
    return os.path.join(private, hashlib.sha256(os.fsencode(path)).hexdigest()[:16] + ".sock")


def private_directory(path: str) -> bool:
    """Made here and now (mkdir is atomic), or already this user's alone: a real directory, not a link, that
    nobody else may enter. Another user may have made it first to catch our socket: it is then not used, and
    never chmod-ed or chown-ed into shape."""
    try:
        os.mkdir(path, 0o700)
        return True
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        found = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and found.st_mode & 0o077 == 0


def socket_record_path() -> str:
    return os.path.join(config_dir(), SOCKET_RECORD)


def recorded_socket() -> str | None:
    """The socket the running keeper named when it started, or None when no keeper did."""
    try:
        with open(socket_record_path(), "rb") as record:
            return os.fsdecode(record.read()) or None
    except OSError:
        return None


def pid_path() -> str:
    return os.path.join(config_dir(), "keeper.pid")


def stop_keeper() -> str:
    """SIGTERM to the keeper named by the pid file; what happened, in words."""
    import signal

    try:
        with open(pid_path()) as pid_file:
            pid = int(pid_file.read())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return "no link keeper is running"
    deadline = time.monotonic() + 5
    while os.path.exists(pid_path()) and time.monotonic() < deadline:
        time.sleep(0.02)  # it removes its pid file last: then its links are closed
    return f"stopped the link keeper (pid {pid})"


def code_fingerprint() -> str:
    """Of offload's own code as installed now: a keeper started before an upgrade (or an edit) must not serve."""
    parts = []
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for directory in (package_dir, os.path.join(os.path.dirname(package_dir), "remote_agent")):
        try:
            with os.scandir(directory) as listing:
                parts += [f"{e.name}:{e.stat().st_size}:{e.stat().st_mtime_ns}" for e in listing if e.name.endswith(".py")]
        except OSError:
            pass
    return " ".join(sorted(parts))


class ForeignPeer(Exception):
    """A process of another user answers on the keeper's socket: it must be sent nothing."""


def peer_is_this_user(sock: socket.socket) -> bool:
    """Whether the process at the other end runs as this user, as the kernel says (SO_PEERCRED). Where it
    cannot say (macOS has no SO_PEERCRED), the socket's private directory is the only guard."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    try:
        _pid, uid, _gid = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("iII")))
    except OSError:
        return False
    return uid == os.getuid()


def connect(path: str) -> socket.socket | None:
    """A connection to our keeper at path, or None when none answers there. ForeignPeer when someone
    else's process does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # no keeper there (yet), or a stale socket of one that died
        sock.close()
        return None
    if not peer_is_this_user(sock):
        sock.close()
        raise ForeignPeer(path)
    return sock


def connect_recorded() -> socket.socket | None:
    path = recorded_socket()
    return connect(path) if path else None


def spawn_keeper() -> None:
    """Start the keeper in its own session with no link to this terminal: it outlives this command. It runs
    in /, so it is given OFFLOAD_HOME as the absolute path this process reads."""
    import subprocess

    os.makedirs(config_dir(), exist_ok=True)
    with open(os.path.join(config_dir(), "keeper.log"), "ab") as log:
        subprocess.Popen([sys.executable, "-m", "offload.keeper"], stdin=subprocess.DEVNULL, stdout=log,
                         stderr=log, cwd="/", start_new_session=True, close_fds=True,
                         env={**os.environ, "OFFLOAD_HOME": config_dir()})


def connect_or_start() -> socket.socket | None:
    """A connection to this user's keeper, started if none runs; None: run the command in this process."""
    try:
        sock = connect_recorded()
        if sock is not None:
            return sock
        if socket_path() is None:  # no private place for a socket: no keeper, and nothing said about it
            return None
        try:
            spawn_keeper()
        except OSError:
            return None
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            sock = connect_recorded()
            if sock is not None:
                return sock
            time.sleep(0.01)
    except ForeignPeer:  # another user listens where our keeper should: it gets nothing, not even argv
        return None
    return None


def run(argv: list) -> int | None:
    """The exit code of `offload ARGV` as the keeper ran it, or None to run it in this process."""
    if keep_alive_s() <= 0:
        return None
    fingerprint = code_fingerprint()
    for _ in range(2):  # a keeper of other code stops when asked; the second try starts a current one
        code = ask_keeper(argv, fingerprint)
        if code != STALE:
            return code
    return None


STALE = "stale"


def ask_keeper(argv: list, fingerprint: str) -> int | str | None:
    sock = connect_or_start()
    if sock is None:
        return None
    with sock:
        request = {"v": PROTOCOL, "code": fingerprint, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                   "tty": {"stdin": sys.stdin.isatty(), "stdout": sys.stdout.isatty(), "stderr": sys.stderr.isatty()},
                   "columns": terminal_columns()}
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            return relay(sock.makefile("rb"))
        except OSError:
            return None  # the keeper died before it ran anything: this process does it


def terminal_columns() -> int:
    """As shutil.get_terminal_size() decides (COLUMNS first, then the terminal, else 80), without shutil."""
    if os.environ.get("COLUMNS", "").isdigit() and int(os.environ["COLUMNS"]) > 0:
        return int(os.environ["COLUMNS"])
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        columns = 0
    return columns if columns > 0 else 80  # a new pty reports 0 columns until someone sets its size


def relay(replies) -> int | None:
    """Print the keeper's output as it comes; its last line is the exit code (or "redo here")."""
    started = False
    for line in replies:
        reply = json.loads(line)
        if "o" in reply or "e" in reply:
            started = True
            stream = sys.stdout if "o" in reply else sys.stderr
            stream.write(reply.get("o", reply.get("e")))
            stream.flush()
        elif "exit" in reply:
            return int(reply["exit"])
        elif reply.get("redo") and not started:
            return None
        elif reply.get("stale"):
            return STALE
    if started:  # it printed, then vanished: say so rather than run the command a second time
        print("offload: error: the link keeper stopped in the middle of the command "
              "(its log: keeper.log in offload's config dir)", file=sys.stderr)
        return 1
    return None
