"""Where offload keeps its own state. OFFLOAD_HOME relocates all of it (tests, portable installs)."""
from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    if os.environ.get("OFFLOAD_HOME"):
        return Path(os.environ["OFFLOAD_HOME"])
    import platformdirs  # only here: the common case (OFFLOAD_HOME unset) pays for it once

    return Path(platformdirs.user_config_dir("offload"))


def hosts_file() -> Path:
    return config_dir() / "hosts.yaml"


def known_hosts_file() -> Path:
    return config_dir() / "known_hosts"


def ssh_dir() -> Path:
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
