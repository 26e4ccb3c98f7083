"""The thin end of a command the link keeper runs: hand it the command line, with this process's stdin, stdout
and stderr, and wait for the exit code.

Standard library only, and nothing of offload's heavier modules (paths.py imports only os): a command that
finds the keeper running costs a Python start-up and one local socket round trip on top of the command itself.
The keeper writes and reads the passed descriptors itself, so the command's output (text, and bytes exactly as
written) and its prompts are this terminal's, as in-process; Ctrl-C here is passed on. None from `run` means "do
it in this process instead" (keeper switched off, not startable, busy with another command, no private place
for its socket, another user's process at that socket, no cwd or a standard stream closed here).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time

from offload import paths

PROTOCOL = 2
KEEP_ALIVE_ENV = "OFFLOAD_KEEP_ALIVE"  # seconds an idle keeper stays; 0 switches the keeper off
DEFAULT_KEEP_ALIVE_S = 600.0  # as ssh's ControlPersist is commonly set
START_DEADLINE_S = 10.0  # from spawning the keeper to its socket answering
STALE = "stale"
WAKE_S = 0.2  # the longest a wait for the keeper's reply lasts before it looks again (reply_lines)
STANDARD_FDS = (0, 1, 2)  # passed to the keeper, which makes them the command's own
STREAM_NAMES = ("stdin", "stdout", "stderr")


def keep_alive_s() -> float:
    try:
        return max(0.0, float(os.environ.get(KEEP_ALIVE_ENV, DEFAULT_KEEP_ALIVE_S)))
    except ValueError:
        return DEFAULT_KEEP_ALIVE_S


def stop_keeper() -> str:
    """SIGTERM to the keeper named by the pid file; what happened, in words."""
    try:
        with open(paths.keeper_pid_path()) as pid_file:
            pid = int(pid_file.read())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return "no link keeper is running"
    deadline = time.monotonic() + 5
    while os.path.exists(paths.keeper_pid_path()) and time.monotonic() < deadline:
        time.sleep(0.02)  # it removes its pid file last: then its idle links are closed
    return f"stopped the link keeper (pid {pid})"


def code_fingerprint() -> str:
    """Of offload's own code as installed now, subpackages included, and of the Python that runs it: a keeper
    started before an upgrade (or an edit), or by another interpreter (a local run uses it), must not serve."""
    parts = []
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for top in (package_dir, os.path.join(os.path.dirname(package_dir), "remote_agent")):
        for directory, subdirectories, files in os.walk(top):
            subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
            for name in files:
                try:
                    found = os.stat(os.path.join(directory, name)) if name.endswith(".py") else None
                except OSError:  # gone as we looked (an upgrade in progress): the next command looks again
                    continue
                if found is not None:
                    parts.append(f"{os.path.relpath(directory, top)}/{name}:{found.st_size}:{found.st_mtime_ns}")
    return " ".join([sys.executable, package_dir, *sorted(parts)])


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
    path = paths.recorded_keeper_socket()
    return connect(path) if path else None


def spawn_keeper() -> None:
    """Start the keeper in its own session with no link to this terminal: it outlives this command. It runs
    in /, so it is given OFFLOAD_HOME as the absolute path this process reads."""
    import subprocess  # lazy: only the command that starts a keeper pays for it

    home = paths.config_dir_name()
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, "keeper.log"), "ab") as log:
        subprocess.Popen([sys.executable, "-m", "offload.keeper"], stdin=subprocess.DEVNULL, stdout=log,
                         stderr=log, cwd="/", start_new_session=True, close_fds=True,
                         env={**os.environ, "OFFLOAD_HOME": home})


def connect_or_start() -> socket.socket | None:
    """A connection to this user's keeper, started if none runs; None: run the command in this process."""
    try:
        sock = connect_recorded()
        if sock is not None:
            return sock
        if paths.keeper_socket_path() is None:  # no private place for a socket: no keeper, nothing said about it
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


def ask_keeper(argv: list, fingerprint: str) -> int | str | None:
    try:
        request = command_request(argv, fingerprint)
    except OSError:  # no cwd (deleted under us), or a standard stream closed: the command runs here, as it can
        return None
    sock = connect_or_start()
    if sock is None:
        return None
    with sock:
        try:
            socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], list(STANDARD_FDS))
        except OSError:
            return None  # the keeper died before it ran anything: this process does it
        return KeptCommand(sock).serve(reply_lines(sock))


def command_request(argv: list, fingerprint: str) -> dict:
    """The command line and everything of this process the command sees in-process; our stdin, stdout and stderr
    themselves go along with it (SCM_RIGHTS), so the command reads and writes them as we would."""
    for fd in STANDARD_FDS:
        os.fstat(fd)  # OSError when closed: nothing to pass
    umask = os.umask(0o077)
    os.umask(umask)
    return {"v": PROTOCOL, "code": fingerprint, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
            "umask": umask, "streams": {name: stream_facts(getattr(sys, name)) for name in STREAM_NAMES}}


def stream_facts(stream) -> list | None:
    """How Python opened this standard stream, for the keeper to open the passed descriptor alike."""
    if stream is None or not hasattr(stream, "line_buffering"):
        return None
    return [stream.encoding, stream.errors, stream.line_buffering, stream.write_through]


def reply_lines(sock: socket.socket):
    """The keeper's reply lines, read in waits of at most WAKE_S: CPython can miss waking a blocked read for a
    signal that comes just as it begins, and a Ctrl-C must reach the keeper at once, not at its next reply."""
    sock.settimeout(WAKE_S)
    pending = b""
    while True:
        try:
            data = sock.recv(1 << 16)
        except socket.timeout:
            continue
        except OSError:
            data = b""
        if not data:
            if pending:
                yield pending
            return
        pending += data
        *lines, pending = pending.split(b"\n")
        yield from lines


class KeptCommand:
    """This process's side of the command the keeper runs: it waits for the exit code and passes Ctrl-C on.

    Ctrl-C is taken by a handler of ours only where Python's own would raise KeyboardInterrupt (not where the
    shell started us with SIGINT ignored): it sends `interrupt`, and the keeper raises it in the command."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def serve(self, replies) -> int | str | None:
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, self.on_interrupt)
        try:
            return self.wait(replies)
        finally:
            signal.signal(signal.SIGINT, previous)

    def wait(self, replies) -> int | str | None:
        """The exit code; STALE, or None ("run it here"), when the keeper could not take the command."""
        started = False
        for line in replies:
            reply = json.loads(line)
            if "exit" in reply:
                return int(reply["exit"])
            if reply.get("stale"):
                return STALE
            started = started or bool(reply.get("started"))
            if reply.get("busy") and not started:
                return None
        if started:  # it began, then the keeper vanished: say so rather than run the command a second time
            print("offload: error: the link keeper stopped in the middle of the command "
                  "(its log: keeper.log in offload's config dir)", file=sys.stderr)
            return 1
        return None

    def on_interrupt(self, signum, frame) -> None:
        try:
            self.sock.sendall(b'{"interrupt": true}\n')
        except OSError:
            pass  # the keeper is gone: the wait sees the end of its replies
