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
    offload_file = home.known_hosts_file()
    if offload_file.is_file():
        client.get_host_keys().load(str(offload_file))
    user_file = home.ssh_dir() / "known_hosts"
    if user_file.is_file():
        client.load_system_host_keys(str(user_file))


def remember(known_hosts_name: str, key) -> None:
    path = home.known_hosts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{known_hosts_name} {key.get_name()} {key.get_base64()}\n")


def forget_hint(target) -> str:
    name = target.known_hosts_name
    return (f"if {target.name} was reinstalled, remove the old key with "
            f"`ssh-keygen -R '{name}' -f {home.known_hosts_file()}` (and from ~/.ssh/known_hosts), "
            f"then run `offload hosts check {target.name}`")


def unknown_key_error(target, key) -> HostKeyError:
    return HostKeyError(
        f"host key of {target.name} ({target.known_hosts_name}) is not known: {key.get_name()} {fingerprint(key)}",
        hint=f"confirm it interactively with `offload hosts check {target.name}`",
        hostname=target.known_hosts_name, got=fingerprint(key))


def changed_key_error(target, got, expected) -> HostKeyError:
    return HostKeyError(
        f"host key of {target.name} ({target.known_hosts_name}) CHANGED: expected {fingerprint(expected)}, "
        f"got {fingerprint(got)}; refusing to connect",
        hint=forget_hint(target), hostname=target.known_hosts_name, got=fingerprint(got),
        expected=fingerprint(expected))


def make_policy(target, confirm):
    """A paramiko MissingHostKeyPolicy: ask `confirm(target, key)`; remember the key or refuse."""
    import paramiko

    class AskOrRefuse(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            if confirm is None or not confirm(target, key):
                raise unknown_key_error(target, key)
            remember(target.known_hosts_name, key)
            client.get_host_keys().add(target.known_hosts_name, key.get_name(), key)

    return AskOrRefuse()
