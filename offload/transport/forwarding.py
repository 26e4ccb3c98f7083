"""Laptop ports forwarded to a host, as `ssh -L` forwards them: 127.0.0.1:LOCAL here to the host's
127.0.0.1:REMOTE, each connection over a direct-tcpip channel of the link's SSH connection, its bytes relayed by
fabric's Tunnel (fabric: the design's own package).

A port is bound when the command starts, before anything runs on the host (a port in use is one line naming
who holds it), and stays bound across outages of the link: each new connection takes the link's SSH connection
of the moment, so once the link is back the next connection (a browser's retry) goes through the new one.
fabric's TunnelManager is not used for the listening side: it stops for good at the first channel the host
refuses (a TensorBoard not up yet), and reports a port in use only once it is stopped.
"""
from __future__ import annotations

import errno
import select
import socket
import threading

from offload.config.ports import PortForward
from offload.console import say
from offload.errors import OffloadError
from offload.transport.link import LocalLink
from offload.transport.port_holder import port_holder

LOOPBACK = "127.0.0.1"
CHANNEL_TIMEOUT_S = 10
RELAY_CHUNK = 64 << 10  # fabric's Tunnel relays 1 KiB a read by default: a notebook's plots would crawl
ACCEPT_WAKE_S = 0.5  # how soon a closed forward's listening thread notices
JOIN_S = 2.0


class Forwarder:
    """One laptop port: listening from the start, connected through `link` once one is attached."""

    def __init__(self, forward: PortForward, bind: str = LOOPBACK):
        self.forward, self.bind, self.link = forward, bind, None
        self.listener = listen(bind, forward)
        self.stopping, self.lock, self.tunnels = threading.Event(), threading.Lock(), []
        self.complained = set()  # each kind of refusal is said once, until a connection gets through again
        self.thread = threading.Thread(target=self.serve, name=f"forward-{forward.local}", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                ready, _, _ = select.select([self.listener], [], [], ACCEPT_WAKE_S)
                if ready:
                    connection, peer = self.listener.accept()  # never blocks: a reset one raises, and we go on
                    connection.setblocking(True)
                    threading.Thread(target=self.connect, args=(connection, peer), daemon=True).start()
            except (OSError, ValueError):  # a connection reset before it was accepted; or closed under us
                if self.stopping.is_set() or self.listener.fileno() < 0:
                    return

    def connect(self, connection: socket.socket, peer: tuple) -> None:
        """One local connection, relayed over a new channel of the link's connection as it is now."""
        import paramiko  # lazy: as fabric below (only its exception types; the link loaded it already)
        from fabric.tunnels import Tunnel  # lazy: fabric takes 0.3 s to import, and only forwarding needs it

        link, remote = self.link, self.forward.remote
        client = link.client if link is not None else None
        transport = client.get_transport() if client is not None else None
        if transport is None or not transport.is_active():
            connection.close()
            self.complain("not connected to the host yet" if link is None else
                          "the link is down: connections are refused until it is back")
            return
        try:
            channel = transport.open_channel("direct-tcpip", (LOOPBACK, remote), peer[:2], timeout=CHANNEL_TIMEOUT_S)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            connection.close()
            why = getattr(exc, "text", None) or str(exc) or type(exc).__name__
            self.complain(f"{link.target.name} refused the connection to its 127.0.0.1:{remote} ({why}); "
                          "is the server up there yet?")
            return
        self.complained = set()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as OpenSSH's forwarded sockets
        tunnel = Tunnel(channel=channel, sock=connection, finished=threading.Event())
        tunnel.socket_chunk_size = tunnel.channel_chunk_size = RELAY_CHUNK
        tunnel.daemon = True
        with self.lock:
            if self.stopping.is_set():
                channel.close()
                connection.close()
                return
            self.tunnels = [kept for kept in self.tunnels if kept.is_alive()] + [tunnel]
            tunnel.start()

    def complain(self, text: str) -> None:
        if text not in self.complained:
            self.complained.add(text)
            say(f"port {self.forward.local}: {text}")

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(JOIN_S)  # within ACCEPT_WAKE_S: then nothing selects on the socket being closed
        self.listener.close()
        with self.lock:
            tunnels = list(self.tunnels)
        for tunnel in tunnels:
            tunnel.finished.set()
        for tunnel in tunnels:
            tunnel.join(JOIN_S)


def listen(bind: str, forward: PortForward) -> socket.socket:
    """A listening socket on bind:forward.local; a one-line OffloadError where it cannot be had."""
    try:
        family = socket.getaddrinfo(bind, forward.local, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError):
        raise OffloadError(f"--bind {bind}: not an address of this machine",
                           hint="leave --bind out (127.0.0.1), or give an address such as 0.0.0.0") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    # A port the last forward left in TIME_WAIT binds again at once; one another program listens on still does not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, forward.local))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise bind_error(exc, bind, forward) from None
    return sock


def bind_error(exc: OSError, bind: str, forward: PortForward) -> OffloadError:
    port, other = forward.local, forward.local + 1 if forward.local < 65535 else 1024
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(port)
        return OffloadError(f"local port {port} is in use" + (f" by {holder}" if holder else " (by a program offload cannot see)"),
                            hint=f"stop it, or forward another local port: --forward {other}:{forward.remote}")
    if exc.errno == errno.EACCES:
        return OffloadError(f"local port {port} is below 1024: only root may listen there",
                            hint=f"forward a higher local port: --forward {max(other, 1024)}:{forward.remote}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return OffloadError(f"--bind {bind}: not an address of this machine", hint="leave --bind out (127.0.0.1)")
    return OffloadError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}")


class Forwards:
    """A command's forwarded ports: all bound on entry (or none: the first that cannot be fails the command),
    relayed through a link once attach() gives one, closed on exit."""

    def __init__(self, forwards: list, bind: str | None = None):
        self.forwards, self.bind, self.forwarders = list(forwards), bind or LOOPBACK, []

    def __enter__(self) -> "Forwards":
        try:
            for forward in self.forwards:
                self.forwarders.append(Forwarder(forward, self.bind))
        except BaseException:
            self.close()
            raise
        return self

    def attach(self, link) -> None:
        """Relay through link from now on, and say where each port is; a run on this machine needs no forward."""
        if isinstance(link, LocalLink):
            self.close()  # the job listens on its own ports here: ours would take them from it
            for forward in self.forwards:
                say(f"port {forward.local}: the run is on this machine; its own port is "
                    f"http://{LOOPBACK}:{forward.remote}")
            return
        for forwarder in self.forwarders:
            forwarder.link = link
            say(f"forwarding {forwarder.url} to {link.target.name}'s port {forwarder.forward.remote}")

    def close(self) -> None:
        forwarders, self.forwarders = self.forwarders, []
        for forwarder in forwarders:
            forwarder.close()

    def __exit__(self, *exc) -> None:
        self.close()
