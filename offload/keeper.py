"""The link keeper: a background process that keeps SSH connections and agents open between syncs.

As ssh's ControlMaster/ControlPersist does for ssh: the first `offload sync` starts it; every later one
hands its command line to it over a unix socket in OFFLOAD_HOME and skips Python's heavy imports, the
TCP and SSH handshakes and the agent's start. Commands run one at a time, in this process, through the
same CLI code as in-process, with the client's cwd and environment; their output goes back to the
client. A client that goes away (Ctrl-C, kill -9) aborts its command: its link is closed at once, so
the host drops the half-sent file exactly as when the client held the link itself.

Only this user's processes reach it: its socket is in OFFLOAD_HOME or in a private directory of this
user's, and each client's uid is checked (SO_PEERCRED) before a byte of it is read. Its socket's path is
recorded in OFFLOAD_HOME (keeper.socket), so a client with another TMPDIR finds it at once.

It exits after OFFLOAD_KEEP_ALIVE seconds (default 600) without a command, on SIGTERM
(`offload hosts disconnect`), when a client runs other code than it does (offload was upgraded), or when
its socket, its record or its pid file is no longer its own.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback

from offload.keeper_client import (PROTOCOL, code_fingerprint, keep_alive_s, peer_is_this_user, pid_path, recorded_socket,
                            socket_path, socket_record_path)

CHECK_EVERY_S = 5.0  # how often an idle keeper checks that it is still the one its files name
REQUEST_READ_TIMEOUT_S = 10.0


class ClientStream(io.TextIOBase):
    """sys.stdout or sys.stderr of one command: text goes to the client as it is written."""

    def __init__(self, reply, key: str, tty: bool):
        self.reply, self.key, self.tty = reply, key, tty

    def write(self, text: str) -> int:
        self.reply({self.key: text})
        return len(text)

    def isatty(self) -> bool:
        return self.tty

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return "utf-8"


class Client:
    """One connected `offload` command: its request, a thread-safe reply, and whether it went away."""

    def __init__(self, conn: socket.socket):
        self.conn, self.lock, self.gone = conn, threading.Lock(), threading.Event()

    def read_request(self) -> dict | None:
        self.conn.settimeout(REQUEST_READ_TIMEOUT_S)
        try:
            line = self.conn.makefile("rb").readline()
            request = json.loads(line)
        except (OSError, ValueError):
            return None
        self.conn.settimeout(None)
        return request if isinstance(request, dict) and request.get("v") == PROTOCOL else None

    def reply(self, message: dict) -> None:
        if self.gone.is_set():
            return
        with self.lock:
            try:
                self.conn.sendall(json.dumps(message).encode() + b"\n")
            except OSError:
                self.gone.set()

    def watch_for_hangup(self, on_hangup) -> None:
        """The client sends nothing after its request: end of stream means it went away."""
        def watch():
            try:
                while self.conn.recv(1):
                    pass
            except OSError:
                pass
            if not self.done:
                self.gone.set()
                on_hangup()

        self.done = False
        threading.Thread(target=watch, daemon=True).start()


def run_command(client: Client, request: dict) -> None:
    from offload.cli import app as cli
    from offload.transport import links
    from offload.errors import HostKeyError, RevokedHostKey

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_streams = sys.stdout, sys.stderr
    tty = request.get("tty", {})
    os.environ.clear()
    os.environ.update(request.get("env", {}))
    os.environ["COLUMNS"] = str(request.get("columns", 80))  # rich sizes its bar by the client's terminal
    try:
        os.chdir(request["cwd"])
        sys.stdout = ClientStream(client.reply, "o", bool(tty.get("stdout")))
        sys.stderr = ClientStream(client.reply, "e", bool(tty.get("stderr")))
        links.new_command()
        client.watch_for_hangup(links.abort_active)

        def unknown_host_key(exc: Exception) -> bool:  # a terminal can confirm it: the client does it itself
            return (isinstance(exc, HostKeyError) and not isinstance(exc, RevokedHostKey)
                    and exc.expected_fingerprint is None and bool(tty.get("stdin")))

        def log_traceback(exc: Exception) -> None:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=saved_streams[1])
            saved_streams[1].flush()

        code = cli.run_cli(list(request["argv"]), redo=unknown_host_key, log_internal=log_traceback)
        client.done = True
        client.reply({"redo": True} if code is cli.REDO else {"exit": code})
    except OSError as exc:  # the client's cwd is gone, say
        client.done = True
        client.reply({"e": f"offload: error: {exc}\n"})
        client.reply({"exit": 1})
    finally:
        sys.stdout, sys.stderr = saved_streams
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)


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
            with open(pid_path()) as pid_file:
                ours = int(pid_file.read()) == os.getpid()
            return ours and recorded_socket() == self.sock_path and os.stat(self.sock_path).st_ino == self.sock_inode
        except (OSError, ValueError):
            return False

    def give_up(self) -> None:
        """Leave it all to the next keeper at once, before this one's links are closed; the pid file goes last
        (`hosts disconnect` waits for it)."""
        if self.still_ours():  # a keeper started after us owns them otherwise
            for path in (self.sock_path, socket_record_path(), pid_path()):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self.listener.close()
        self.lock.close()  # and with it the flock: a new keeper may start


def serve(claim: Claim) -> None:
    fingerprint = code_fingerprint()
    idle_limit = keep_alive_s()
    last_used = time.monotonic()
    claim.listener.settimeout(CHECK_EVERY_S)
    while claim.still_ours() and time.monotonic() - last_used < idle_limit:
        try:
            conn, _ = claim.listener.accept()
        except socket.timeout:
            continue
        with conn:
            if not peer_is_this_user(conn):
                continue  # another user's process: nothing of it is read or run, and it does not keep us alive
            client = Client(conn)
            request = client.read_request()
            if request is not None and request.get("code") != fingerprint:
                claim.give_up()  # offload was upgraded since we started: the client's retry starts a new keeper
                client.reply({"stale": True})
                return
            if request is not None:
                run_command(client, request)
        last_used = time.monotonic()


def claim_home() -> Claim | None:
    """This OFFLOAD_HOME's lock, a socket only this user can reach, and the files naming them; None when
    another keeper holds the home or there is no private place for a socket."""
    config_dir = os.path.dirname(pid_path())
    os.makedirs(config_dir, exist_ok=True)
    lock = open(os.path.join(config_dir, "keeper.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None  # another keeper runs for this OFFLOAD_HOME: its socket serves the client that started us
    sock_path = socket_path()
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
    write_atomically(socket_record_path(), os.fsencode(sock_path))
    write_atomically(pid_path(), str(os.getpid()).encode())
    return Claim(lock, listener, sock_path)


def main() -> None:
    claim = claim_home()
    if claim is None:
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    print(f"keeper {os.getpid()} serving {claim.sock_path}", flush=True)
    from offload.cli import app as cli
    from offload.transport import links  # noqa: F401  (cli now, while the first client waits anyway, not per command)

    links.keep_links()
    try:
        serve(claim)
    finally:
        links.close_all()
        claim.give_up()
        print(f"keeper {os.getpid()} stopped", flush=True)


if __name__ == "__main__":
    main()
