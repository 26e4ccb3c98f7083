"""Host keys: verified against known_hosts files, never trusted silently.

offload keeps its own known_hosts (OpenSSH format) and also accepts keys in ~/.ssh/known_hosts. A key
marked `@revoked` for the host in either file is refused before anything else, whatever the other says.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from pathlib import Path

from offload import paths as home
from offload.errors import HostKeyError, RevokedHostKey


def fingerprint(key) -> str:
    """OpenSSH's SHA256 fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_files() -> tuple:
    """~/.ssh/known_hosts, then offload's own (which wins for the same name and key type)."""
    return home.ssh_dir() / "known_hosts", home.known_hosts_file()


def load_known_keys(client) -> None:
    for path in known_hosts_files():
        if path.is_file():
            add_known_hosts(client.get_host_keys(), path)


def add_known_hosts(host_keys, path) -> None:
    """paramiko's HostKeys.load, except that a line it cannot read is skipped, as ssh skips it: an
    @cert-authority or @revoked line (paramiko#771) or one damaged key would make every connection fail."""
    from paramiko import SSHException  # lazy: ~170 ms to import, paid only by the commands that connect
    from paramiko.hostkeys import HostKeyEntry, InvalidHostKey  # lazy: as above

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


# OpenSSH's GlobalKnownHostsFile: an administrator's @revoked there holds for every user's ssh, so for offload too
GLOBAL_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"), Path("/etc/ssh/ssh_known_hosts2"))


def refuse_if_revoked(target, key, files=None) -> None:
    """Raise RevokedHostKey when a `@revoked` line of any known_hosts file (the user's, offload's, the
    system's) names this key for this host.

    paramiko's parser skips marker lines, so they are read here: `@revoked PATTERNS KEYTYPE BASE64`, the
    patterns matched as OpenSSH matches them (hashed names, `*` and `?`, `!` negation)."""
    blob = key.asbytes()
    for path in files if files is not None else (*known_hosts_files(), *GLOBAL_KNOWN_HOSTS):
        if not path.is_file():
            continue
        with open(path, errors="replace") as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if len(fields) < 4 or fields[0] != "@revoked" or not host_matches(fields[1], target.known_hosts_name):
                    continue
                try:
                    revoked = base64.b64decode(fields[3], validate=True)
                except (binascii.Error, ValueError):  # a damaged line revokes nothing, as in ssh
                    continue
                if revoked == blob:
                    raise revoked_key_error(target, key, f"{path}:{number}")


def host_matches(patterns: str, name: str) -> bool:
    """Whether a known_hosts host field names `name` ("host" or "[host]:port"), as OpenSSH's match_hostname."""
    if patterns.startswith("|1|"):  # HashKnownHosts: |1|salt|HMAC-SHA1(salt, name), one name per field
        try:
            salt, digest = (base64.b64decode(part) for part in patterns[3:].split("|", 1))
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    matched = False
    for pattern in patterns.lower().split(","):
        negated = pattern.startswith("!")
        glob = re.escape(pattern[1:] if negated else pattern).replace(r"\*", ".*").replace(r"\?", ".")
        if re.fullmatch(glob, name.lower()):
            if negated:  # a negated match wins over any other
                return False
            matched = True
    return matched


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


def revoked_key_error(target, key, where: str) -> RevokedHostKey:
    return RevokedHostKey(
        f"host key of {target.name} ({target.known_hosts_name}) is REVOKED ({where}): {key.get_name()} "
        f"{fingerprint(key)}; refusing to connect",
        hint="the host needs a new host key: ask whoever runs it, then confirm the new key with "
             f"`offload hosts check {target.registered_name}`",
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
    import paramiko  # lazy: ~170 ms to import, paid only by the commands that connect

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
