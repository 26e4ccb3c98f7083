"""Where offload keeps its own state. OFFLOAD_HOME relocates all of it (tests, portable installs).

Only os is imported at the top: the keeper's client reads config_dir_name() on every `offload sync`, and
pathlib alone costs it more than its socket round trip does.
"""
from __future__ import annotations

import os


def config_dir_name() -> str:
    """The one place OFFLOAD_HOME is read. Made absolute here: the keeper runs in / and would read a
    relative OFFLOAD_HOME from there."""
    if os.environ.get("OFFLOAD_HOME"):
        return os.path.abspath(os.environ["OFFLOAD_HOME"])
    import platformdirs  # only here: the common case (OFFLOAD_HOME unset) pays for it once

    return platformdirs.user_config_dir("offload")


def config_dir() -> Path:
    from pathlib import Path  # not at the top: see the module's docstring

    return Path(config_dir_name())


def hosts_file() -> Path:
    return config_dir() / "hosts.yaml"


def known_hosts_file() -> Path:
    return config_dir() / "known_hosts"


def ssh_dir() -> Path:
    from pathlib import Path

    return Path(os.path.expanduser("~/.ssh"))


MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
LAPTOP_ID_FILE = "laptop-id"  # where no machine id exists: a random one of our own, made once


def laptop_identity() -> str:
    """Who this laptop is, for keeping two laptops' copies of /home/me/proj apart on one host: the
    machine's id (systemd's, stable across reboots; macOS has none, so offload makes one) and its name.
    OFFLOAD_LAPTOP_ID sets it outright: containers cloned from one image share a machine id."""
    import socket

    if os.environ.get("OFFLOAD_LAPTOP_ID"):
        return os.environ["OFFLOAD_LAPTOP_ID"]
    for path in MACHINE_ID_FILES:
        try:
            with open(path) as f:
                machine = f.read().strip()
        except OSError:
            continue
        if machine:
            return f"{machine}:{socket.gethostname()}"
    return f"{own_laptop_id()}:{socket.gethostname()}"


def own_laptop_id() -> str:
    import secrets

    path = config_dir() / LAPTOP_ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x") as f:  # "x": of two processes racing to make it, one wins and both read its id
            f.write(secrets.token_hex(16) + "\n")
    except FileExistsError:
        pass
    return path.read_text().strip()
