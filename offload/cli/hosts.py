"""`offload hosts add|list|remove|wake`: the registry edited and shown, a new host's key confirmed, a host woken."""
from __future__ import annotations

import os
import sys
from contextlib import closing

from rich.table import Table

from offload.config import hosts
from offload.config.resolve import resolve, split_destination
from offload.console import add_plain_row, say, table_console
from offload.errors import HostKeyError, HostUnreachable, OffloadError, RemoteError, RevokedHostKey
from offload.transport import agent as agents
from offload.transport import ssh
from offload.transport.hostkeys import fingerprint, forget_hint
from offload.transport.wake_on_lan import wake_host


def wake_entry(mac: str | None, broadcast: str | None) -> dict | None:
    """hosts.yaml's `wake:` from --wake-mac and --wake-broadcast."""
    if mac is None and broadcast is not None:
        raise OffloadError("--wake-broadcast needs --wake-mac", hint="give the host's MAC: --wake-mac AA:BB:CC:DD:EE:FF")
    return None if mac is None else {"mac": mac, **({"broadcast": broadcast} if broadcast else {})}


def wake_registered(name: str, timeout: float) -> int:
    return wake_host(resolve(name, hosts.load().get(name)), timeout)


def add_host(name: str, destination: str, flags: dict, yes: bool, timeout: float, force: bool = False) -> int:
    registry = hosts.load()
    if not hosts.NAME_PATTERN.match(name):
        raise OffloadError(f"bad host name {name!r}: use letters, digits, '.', '_' and '-'")
    if name in registry.hosts:
        raise OffloadError(f"host {name} is already registered", hint=f"offload hosts remove {name} first")
    user, hostname, port = split_destination(destination)
    entry = {"hostname": hostname, "user": user, "port": flags.pop("port", None) or port, **flags}
    entry = {key: value for key, value in entry.items() if value is not None}
    if not entry.get("identity_file", "~").startswith("~"):  # later runs start in other directories
        entry["identity_file"] = os.path.abspath(entry["identity_file"])
    for key, value in entry.items():
        problem = hosts.check_field(key, value)
        if problem:
            raise OffloadError(problem)
    target = resolve(name, entry)

    def confirm(target, key) -> bool:
        print(f"{target.name} ({target.known_hosts_name}) presents {key.get_name()} key {fingerprint(key)}",
              file=sys.stderr)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise OffloadError(f"cannot confirm the host key of {name} without a terminal",
                               hint="compare the fingerprint above with the host's, then add --yes")
        return input("Trust this key? [y/N] ").strip().lower() in ("y", "yes")

    try:
        client = ssh.connect(target, timeout, confirm=confirm)
    except RevokedHostKey:  # nothing the user could trust: say so as it is
        raise
    except HostKeyError as exc:  # its hint would name `hosts check`, for a host that is not registered
        if exc.expected_fingerprint is None:
            raise OffloadError(f"{name} not added: you did not trust its host key {exc.got_fingerprint}",
                               hint=f"compare it with `ssh-keygen -lf` of the host's key, then run `offload hosts add {name}` again") from None
        exc.hint = forget_hint(exc.hostname, f"run `offload hosts add {name}` again")
        raise
    except HostUnreachable as exc:
        registry.hosts[name] = entry
        registry.save()
        say(f"warning: {name} is unreachable now ({exc.reason}); saved anyway. "
            f"Its key will be confirmed by `offload hosts check {name}`")
        return 0
    with closing(client):
        check_python(client, target, force)
    registry.hosts[name] = entry
    registry.save()
    say(f"added {name} ({target.address}) to {registry.path}")
    return 0


def check_python(client, target, force: bool) -> None:
    """The host's python starts offload's agent and has torch: a python that cannot is refused (unless --force,
    then said); a python without torch is said, since a setup may install it."""
    try:
        agent = agents.start_remote(client, target)
    except RemoteError as exc:
        if not force:
            raise OffloadError(f"{target.name} not added: {exc.message}",
                               hint="give the interpreter that has torch with --python PATH, or add --force to save it anyway") from None
        say(f"warning: {exc.message}; saved anyway (--force)")
        return
    hello = agent.hello
    agent.close()
    say(f"python on {target.name}: {hello['python']} ({hello['python_version']}, {hello['python_env']})")
    if not hello.get("has_torch"):
        say(f"warning: no torch in {hello['python']} on {target.name}: install it there (or in offload.yaml's setup), "
            f"or set the interpreter that has it: offload hosts set {target.name} python PATH")


def list_hosts() -> int:
    registry = hosts.load()
    if not registry.hosts:
        say(f"no hosts registered in {registry.path}; add one with `offload hosts add NAME [user@]hostname`")
        return 0
    table = Table("name", "address", "python", "workdir", "gpus", box=None)
    for index, (name, entry) in enumerate(registry.hosts.items()):
        target = resolve(name, entry)
        label = name + (" (default)" if index == 0 else "")
        add_plain_row(table, label, target.address, target.python, target.workdir, str(target.gpus))
    table_console().print(table)
    return 0


def remove_host(name: str) -> int:
    registry = hosts.load()
    registry.get(name)
    del registry.hosts[name]
    registry.save()
    say(f"removed {name}")
    return 0
