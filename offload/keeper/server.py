"""The keeper's process: its claim on OFFLOAD_HOME, the door its clients come in by, and the loop that runs their
commands one at a time (see the package's docstring)."""
from __future__ import annotations

import fcntl
import os
import queue
import signal
import socket
import sys
import threading
import time

from offload import paths
from offload.keeper.command import STREAM_FDS, MainThreadSignals, run_command
from offload.keeper.session import Session
from offload.keeper_client import code_fingerprint, keep_alive_s, peer_is_this_user
from offload.transport import links

CHECK_EVERY_S = 5.0  # how often an idle keeper checks that it is still the one its files name


def write_atomically(path: str, content: bytes) -> None:
    with open(path + ".tmp", "wb") as tmp:
        tmp.write(content)
    os.replace(path + ".tmp", path)


class Claim:
    """The keeper's claim on its OFFLOAD_HOME: the lock, the socket, the record naming it and the pid file."""

    def __init__(self, lock, listener: socket.socket, sock_path: str):
        self.lock, self.listener, self.sock_path = lock, listener, sock_path
        self.sock_inode = os.stat(sock_path).st_ino

    def still_ours(self) -> bool:
        try:
            with open(paths.keeper_pid_path()) as pid_file:
                ours = int(pid_file.read()) == os.getpid()
            return ours and paths.recorded_keeper_socket() == self.sock_path and \
                os.stat(self.sock_path).st_ino == self.sock_inode
        except (OSError, ValueError):
            return False

    def release(self) -> None:
        """Leave OFFLOAD_HOME to the next keeper at once: its files (the pid file last: `hosts disconnect` waits
        for it) and the lock, which a new keeper takes. Our listener, unlinked, is reached by nobody new."""
        if self.still_ours():  # a keeper started after us owns them otherwise
            for path in (self.sock_path, paths.keeper_socket_record(), paths.keeper_pid_path()):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self.lock.close()  # and with it the flock

    def give_up(self) -> None:
        self.release()
        self.listener.close()


class Doorway:
    """Takes clients in on a thread of its own, so that one arriving while a command runs is told at once that
    the keeper is busy (it runs its command in its own process) rather than left waiting for the end of a run."""

    def __init__(self, listener: socket.socket):
        self.listener, self.admitted, self.lock = listener, queue.Queue(), threading.Lock()
        self.busy = self.closed = False  # busy: from a client's admission to the end of its command
        listener.settimeout(CHECK_EVERY_S)
        threading.Thread(target=self.accept_all, name="keeper-doorway", daemon=True).start()

    def accept_all(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:  # closed: the keeper is leaving
                return
            if not peer_is_this_user(conn):
                conn.close()  # another user's process: nothing of it is read or run, and it does not keep us alive
                continue
            conn.settimeout(None)
            threading.Thread(target=self.admit, args=(Session(conn),), name="keeper-admit", daemon=True).start()

    def admit(self, session: Session) -> None:
        if session.read_request() is None:
            session.close()
            return
        with self.lock:
            turned_away = self.busy or self.closed
            if not turned_away:
                self.busy = True
                self.admitted.put(session)
        if turned_away:
            session.reply({"busy": True})
            session.close()

    def next_session(self, timeout: float) -> Session | None:
        try:
            return self.admitted.get(timeout=timeout)
        except queue.Empty:
            return None

    def done(self) -> None:
        with self.lock:
            self.busy = False

    def close(self) -> None:
        """Admit nobody more; a client admitted but not served yet runs its command itself."""
        with self.lock:
            self.closed = True
        while not self.admitted.empty():
            session = self.admitted.get()
            session.reply({"busy": True})
            session.close()


def serve(claim: Claim, doorway: Doorway, signals: MainThreadSignals, keeper_fds: list) -> None:
    fingerprint = code_fingerprint()
    idle_limit = keep_alive_s()
    last_used = time.monotonic()
    while claim.still_ours():
        idle_left = idle_limit - (time.monotonic() - last_used)
        if idle_left <= 0:
            return
        session = doorway.next_session(min(CHECK_EVERY_S, idle_left))
        if session is None:
            continue
        if session.request.get("code") != fingerprint:
            claim.give_up()  # offload was upgraded since we started: the client's retry starts a new keeper
            session.reply({"stale": True})
            session.close()
            return
        try:
            run_command(session, signals, keeper_fds)
        finally:
            doorway.done()
        last_used = time.monotonic()


def claim_home() -> Claim | None:
    """This OFFLOAD_HOME's lock, a socket only this user can reach, and the files naming them; None when
    another keeper holds the home or there is no private place for a socket."""
    config_dir = paths.config_dir_name()
    os.makedirs(config_dir, exist_ok=True)
    lock = open(os.path.join(config_dir, "keeper.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None  # another keeper runs for this OFFLOAD_HOME: its socket serves the client that started us
    sock_path = paths.keeper_socket_path()
    if sock_path is None:
        lock.close()
        return None
    if os.path.exists(sock_path):
        os.unlink(sock_path)  # left by a keeper that died: we hold the lock, so none is using it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)  # only this user may hand us commands
    try:
        listener.bind(sock_path)
    finally:
        os.umask(old_umask)
    listener.listen(16)
    write_atomically(paths.keeper_socket_record(), os.fsencode(sock_path))
    write_atomically(paths.keeper_pid_path(), str(os.getpid()).encode())
    return Claim(lock, listener, sock_path)


def on_terminate(claim: Claim, doorway: Doorway) -> None:
    """SIGTERM (`offload hosts disconnect`): an idle keeper leaves now; a busy one lets its command finish (a run
    being followed goes on being followed) and leaves OFFLOAD_HOME to a new keeper meanwhile."""
    if not doorway.busy:
        sys.exit(0)
    claim.release()


def main() -> None:
    claim = claim_home()
    if claim is None:
        return
    keeper_fds = [os.dup(fd) for fd in STREAM_FDS]  # /dev/null and keeper.log: ours again after each command
    signals = MainThreadSignals()
    signals.install()
    doorway = Doorway(claim.listener)
    signal.signal(signal.SIGTERM, lambda *_: on_terminate(claim, doorway))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    print(f"keeper {os.getpid()} serving {claim.sock_path}", flush=True)
    links.keep_links()
    try:
        serve(claim, doorway, signals, keeper_fds)
    finally:
        doorway.close()
        links.close_all()
        claim.give_up()
        print(f"keeper {os.getpid()} stopped", flush=True)


