"""SSH connections: one deadline for TCP and banner, keepalives, and failures sorted by what they mean.

Unreachable (may fall back to a local run) is kept apart from authentication and host-key failures
(never fall back: the host is there, and something is wrong that the user must fix).
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import time
from dataclasses import replace

from offload.transport import hostkeys
from offload.errors import AuthFailed, HostUnreachable, OffloadError
from offload.config.resolve import SSHTarget, resolve_jump

logging.getLogger("paramiko").addHandler(logging.NullHandler())  # its thread's tracebacks are not for users
KEEPALIVE_S = 5  # a dead link is noticed in seconds, not at the next TCP timeout
MAX_JUMPS = 4
HANDSHAKE_S = 30  # key exchange and authentication, once the host has answered


def identity_files_to_offer(target: SSHTarget) -> list:
    """The target's key files; a missing IdentityFile from ~/.ssh/config is skipped, as ssh skips it."""
    usable = []
    for path in target.identity_files:
        if target.identity_from_config and not os.path.exists(path):
            continue
        check_identity_file(target, path, agent=bool(os.environ.get("SSH_AUTH_SOCK")))
        usable.append(path)
    return usable


def check_identity_file(target: SSHTarget, path: str, agent: bool) -> None:
    fix = "fix identity_file in hosts.yaml (or IdentityFile in ~/.ssh/config)"
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise OffloadError(f"cannot read identity file {path} for {target.name}: {exc.strerror}", hint=fix) from None
    if agent:  # `IdentityFile key.pub` names a key that ssh-agent holds: a public key is fine then
        return
    if b"PRIVATE KEY-----" not in head:  # OpenSSH, PEM and PKCS#8 private keys all say so in their first line
        what = "a public key" if head.startswith((b"ssh-", b"ecdsa-", b"sk-")) else "not a private key"
        raise OffloadError(f"identity file {path} for {target.name} is {what}",
                           hint=f"point it at the private key (the file without .pub): {fix}")


def open_socket(target: SSHTarget, deadline: float, confirm=None, depth: int = 0):
    """A connected socket to the target, directly, through its ProxyCommand, or through its ProxyJump hosts
    (their keys confirmed alike)."""
    remaining = max(deadline - time.monotonic(), 0.1)
    if target.proxy_command:
        from offload.transport.proxy_command import ProxyProcess  # lazy: it imports paramiko

        try:
            return ProxyProcess(target.proxy_command)
        except OSError as exc:  # the shell itself would not start
            raise OffloadError(f"cannot start the ProxyCommand of {target.name}: {exc.strerror}",
                               hint="check SHELL, and ProxyCommand in ~/.ssh/config") from None
    if target.proxy_jump and target.proxy_jump.lower() != "none":
        if depth >= MAX_JUMPS:
            raise OffloadError(f"more than {MAX_JUMPS} ProxyJump hops for {target.name}; is there a loop in ~/.ssh/config?")
        hops = target.proxy_jump.split(",")
        jump_target = replace(resolve_jump(hops[-1].strip()), hop_for=target.registered_name)
        if len(hops) > 1:
            jump_target = replace(jump_target, proxy_jump=",".join(hops[:-1]))
        jump_client = connect(jump_target, deadline - time.monotonic(), confirm=confirm, depth=depth + 1)
        try:
            channel = jump_client.get_transport().open_channel(
                "direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0), timeout=remaining)
        except Exception as exc:
            jump_client.close()
            raise HostUnreachable(target.name, target.address, f"via {jump_target.name}: {exc}") from None
        channel.jump_client = jump_client  # keep the hop alive as long as the channel
        return channel
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=remaining)
    except socket.gaierror:
        raise HostUnreachable(target.name, target.address, "name not resolved") from None
    except socket.timeout:
        raise HostUnreachable(target.name, target.address, f"no answer within {remaining:.0f} s") from None
    except ConnectionRefusedError:
        raise HostUnreachable(target.name, target.address, "connection refused") from None
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ETIMEDOUT):
            raise HostUnreachable(target.name, target.address, exc.strerror.lower()) from None
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # 45 ms -> 4 ms per round trip
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def connect(target: SSHTarget, timeout: float, confirm=None, depth: int = 0):
    """An authenticated paramiko SSHClient; `confirm(target, key) -> bool` decides unknown host keys."""
    import paramiko  # lazy: ~170 ms to import, paid only by the commands that connect

    key_files = identity_files_to_offer(target)
    deadline = time.monotonic() + timeout
    sock = open_socket(target, deadline, confirm, depth)
    client = paramiko.SSHClient()
    hostkeys.load_known_keys(client)
    client.set_missing_host_key_policy(hostkeys.make_policy(target, confirm))
    handshake(client, target, sock, key_files, max(deadline - time.monotonic(), 0.5), timeout)
    client.get_transport().set_keepalive(KEEPALIVE_S)
    return client


def handshake(client, target: SSHTarget, sock, key_files: list, remaining: float, timeout: float) -> None:
    """Key exchange and authentication over sock; a failure closes the client and its socket, and is raised
    sorted by what it means (unreachable, host key, authentication, or SSH itself)."""
    import paramiko  # lazy: ~170 ms to import, paid only by the commands that connect

    from offload.transport.paramiko_transport import transport_factory  # lazy: it imports paramiko

    try:
        client.connect(
            target.hostname, port=target.port, username=target.user, sock=sock,
            key_filename=key_files or None, look_for_keys=not target.identity_files,
            allow_agent=bool(os.environ.get("SSH_AUTH_SOCK")),
            # the connect timeout bounds reaching a banner; key exchange and auth get their own allowance
            # (paramiko uses `timeout` for the key exchange), or a loaded host that answered would fail
            timeout=max(remaining, HANDSHAKE_S), banner_timeout=remaining, auth_timeout=max(remaining, HANDSHAKE_S),
            transport_factory=transport_factory(target),
        )
    except OffloadError:  # the host-key policy refused, or could not ask
        close_quietly(client, sock)
        raise
    except paramiko.BadHostKeyException as exc:
        close_quietly(client, sock)
        raise hostkeys.changed_key_error(target, exc.key, exc.expected_key) from None
    except paramiko.PasswordRequiredException:
        close_quietly(client, sock)
        raise AuthFailed(f"the identity file for {target.name} is encrypted",
                         hint=f"add it to your agent: ssh-add {' '.join(target.identity_files)}") from None
    except paramiko.AuthenticationException as exc:
        close_quietly(client, sock)
        raise AuthFailed(f"authentication to {target.name} as {target.user} failed: {exc}",
                         hint="check user and identity_file in hosts.yaml, or `ssh-add` your key") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise handshake_error(client, target, sock, exc, timeout) from None


def handshake_error(client, target: SSHTarget, sock, exc: Exception, timeout: float) -> OffloadError:
    """The error for a handshake that failed otherwise: no SSH answered in time, no key to offer, or
    SSH's own words; the client and its socket closed."""
    transport = client.get_transport()
    got_banner = transport is not None and getattr(transport, "remote_version", None)
    no_banner = None if got_banner else no_banner_error(target, sock, timeout)  # before close stops a proxy
    close_quietly(client, sock)
    if no_banner is not None:  # something listens, but no SSH server answered in time
        return no_banner
    if "No authentication methods available" in str(exc):  # paramiko's words for: no key file, no agent
        return AuthFailed(f"no key to log in to {target.name} with: no identity file, and none in ssh-agent",
                          hint="set identity_file in hosts.yaml, or `ssh-add` your key to a running ssh-agent")
    return OffloadError(f"SSH to {target.name} failed: {exc}")


def no_banner_error(target: SSHTarget, sock, timeout: float) -> OffloadError:
    """Nothing SSH answered: unreachable, or (a ProxyCommand that could not run at all) a config to fix."""
    failure = sock.failure() if hasattr(sock, "failure") else None
    if failure is None and isinstance(sock, socket.socket):  # the TCP connect was answered: something listens
        return HostUnreachable(target.name, target.address,
                               f"it accepted the TCP connection but never spoke SSH (no SSH banner within {timeout:g} s)",
                               hint=f"something other than sshd may listen on port {target.port}, or sshd there is "
                                    "hung: check the port in hosts.yaml (or ~/.ssh/config), and sshd on the host")
    if failure is None:
        return HostUnreachable(target.name, target.address, f"no SSH banner within {timeout:g} s")
    if sock.exit_status() in (126, 127):  # the shell's "cannot execute" and "not found": no host was tried
        return OffloadError(f"cannot reach {target.name}: {failure}", hint="fix ProxyCommand in ~/.ssh/config")
    return HostUnreachable(target.name, target.address, failure)


def close_quietly(client, sock) -> None:
    """Close a client that failed to connect, and the ProxyCommand or ProxyJump hop its socket runs through."""
    client.close()
    sock.close()  # a Transport that never started leaves its socket (or proxy process) open
    jump_client = getattr(sock, "jump_client", None)
    if jump_client is not None:
        jump_client.close()
