"""Where offload keeps its own state. OFFLOAD_HOME relocates all of it (tests, portable installs).

Only os (and stat, which os loads) is imported at the top: the keeper's client finds its socket here on
every command it hands over, and pathlib alone costs it more than its socket round trip does.
"""
from __future__ import annotations

import os
import stat  # loaded with os already: free

SOCKET_PATH_MAX = 100  # AF_UNIX paths: 108 bytes on Linux, 104 on macOS
SOCKET_RECORD = "keeper.socket"  # in OFFLOAD_HOME: where the running keeper listens, whatever TMPDIR says now


def config_dir_name() -> str:
    """The one place OFFLOAD_HOME is read. Made absolute here: the keeper runs in / and would read a
    relative OFFLOAD_HOME from there."""
    if os.environ.get("OFFLOAD_HOME"):
        return os.path.abspath(os.environ["OFFLOAD_HOME"])
    import platformdirs  # lazy: costs the keeper's client more than its round trip; OFFLOAD_HOME unset only

    return platformdirs.user_config_dir("offload")


def config_dir() -> Path:
    from pathlib import Path  # lazy: see the module's docstring

    return Path(config_dir_name())


def hosts_file() -> Path:
    return config_dir() / "hosts.yaml"


def known_hosts_file() -> Path:
    return config_dir() / "known_hosts"


def ssh_dir() -> Path:
    from pathlib import Path  # lazy: see the module's docstring

    return Path(os.path.expanduser("~/.ssh"))


def keeper_socket_path() -> str | None:
    """Where a new keeper listens: in OFFLOAD_HOME; when that path is too long for a unix socket, in a private
    directory under the temp dir. None when that directory is not private: then there is no keeper."""
    path = os.path.join(config_dir_name(), "keeper.sock")
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        return path
    import hashlib  # lazy: a long OFFLOAD_HOME only; the keeper's client pays for nothing it does not use
    import tempfile  # lazy: as hashlib

    private = os.path.join(tempfile.gettempdir(), f"offload-{os.getuid()}")
    if not private_directory(private):
        return None
    return os.path.join(private, hashlib.sha256(os.fsencode(path)).hexdigest()[:16] + ".sock")


def private_directory(path: str) -> bool:
    """Made here and now (mkdir is atomic), or already this user's alone: a real directory, not a link, that
    nobody else may enter. Another user may have made it first to catch our socket: it is then not used, and
    never chmod-ed or chown-ed into shape."""
    try:
        os.mkdir(path, 0o700)
        return True
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        found = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and found.st_mode & 0o077 == 0


def keeper_socket_record() -> str:
    return os.path.join(config_dir_name(), SOCKET_RECORD)


def recorded_keeper_socket() -> str | None:
    """The socket the running keeper named when it started, or None when no keeper did."""
    try:
        with open(keeper_socket_record(), "rb") as record:
            return os.fsdecode(record.read()) or None
    except OSError:
        return None


def keeper_pid_path() -> str:
    return os.path.join(config_dir_name(), "keeper.pid")


MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
LAPTOP_ID_FILE = "laptop-id"  # where no machine id exists: a random one of our own, made once


def laptop_identity() -> str:
    """Who this laptop is, for keeping two laptops' copies of /home/me/proj apart on one host: the
    machine's id (systemd's, stable across reboots; macOS has none, so offload makes one) and its name.
    OFFLOAD_LAPTOP_ID sets it outright: containers cloned from one image share a machine id."""
    import socket  # lazy: see the module's docstring

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
    import secrets  # lazy: see the module's docstring

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
