"""Host keys: verified against known_hosts files, never trusted silently.

offload keeps its own known_hosts (OpenSSH format) and also accepts keys in ~/.ssh/known_hosts.
"""
from __future__ import annotations

import base64
import hashlib

from . import home
from .errors import HostKeyError


def fingerprint(key) -> str:
    """OpenSSH's SHA256 fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_known_keys(client) -> None:
    """Keys from ~/.ssh/known_hosts, then offload's own (which wins for the same name and key type)."""
    for path in (home.ssh_dir() / "known_hosts", home.known_hosts_file()):
        if path.is_file():
            add_known_hosts(client.get_host_keys(), path)


def add_known_hosts(host_keys, path) -> None:
    """paramiko's HostKeys.load, except that a line it cannot read is skipped, as ssh skips it: an
    @cert-authority or @revoked line (paramiko#771) or one damaged key would make every connection fail."""
    from paramiko import SSHException
    from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith(("#", "@")):
                continue
            try:
                entry = HostKeyEntry.from_line(line, number)
            except (InvalidHostKey, SSHException, ValueError):
                continue
            for hostname in entry.hostnames if entry and entry.key else ():
                host_keys.add(hostname, entry.key.get_name(), entry.key)


def remember(known_hosts_name: str, key) -> None:
    path = home.known_hosts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    needs_newline = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        f.write(("\n" if needs_newline else "") + f"{known_hosts_name} {key.get_name()} {key.get_base64()}\n")


def forget_hint(known_hosts_name: str, then: str) -> str:
    return (f"if the host was reinstalled, remove the old key with "
            f"`ssh-keygen -R '{known_hosts_name}' -f {home.known_hosts_file()}` (and from ~/.ssh/known_hosts), "
            f"then {then}")


def unknown_key_error(target, key) -> HostKeyError:
    return HostKeyError(
        f"host key of {target.name} ({target.known_hosts_name}) is not known: {key.get_name()} {fingerprint(key)}",
        hint=f"confirm it interactively with `offload hosts check {target.registered_name}`",
        hostname=target.known_hosts_name, got=fingerprint(key))


def changed_key_error(target, got, expected) -> HostKeyError:
    return HostKeyError(
        f"host key of {target.name} ({target.known_hosts_name}) CHANGED: expected {fingerprint(expected)}, "
        f"got {fingerprint(got)}; refusing to connect",
        hint=forget_hint(target.known_hosts_name, f"run `offload hosts check {target.registered_name}`"),
        hostname=target.known_hosts_name, got=fingerprint(got),
        expected=fingerprint(expected))


def make_policy(target, confirm):
    """A paramiko MissingHostKeyPolicy: ask `confirm(target, key)`; remember the key or refuse."""
    import paramiko

    class AskOrRefuse(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            try:
                trusted = confirm is not None and confirm(target, key)
            except EOFError:  # Ctrl-D at the prompt: a no, not a dropped link
                trusted = False
            if not trusted:
                raise unknown_key_error(target, key)
            remember(target.known_hosts_name, key)
            client.get_host_keys().add(target.known_hosts_name, key.get_name(), key)

    return AskOrRefuse()
