"""Who listens on a local TCP port, for the one line that says a port is taken: from /proc on Linux (the
socket's inode in /proc/net/tcp, then the process holding that inode), else from lsof (macOS). None when it
cannot be found: another user's process, or neither source here."""
from __future__ import annotations

import os
import shutil
import subprocess

LISTEN = "0A"  # the TCP state column of /proc/net/tcp
LSOF_TIMEOUT_S = 3
SHOWN_CHARS = 60  # of the holder's command line


def port_holder(port: int) -> str | None:
    """'python3 -m http.server 6006 (pid 4242)' for the process listening on port, or None."""
    inodes = listening_inodes(port)
    if inodes is None:
        return lsof_holder(port)
    for pid in os.listdir("/proc"):
        if pid.isdigit() and holds_socket(pid, inodes):
            return f"{command_of(pid)} (pid {pid})"
    return None


def listening_inodes(port: int) -> set | None:
    """The inodes of the sockets listening on port (IPv4 and IPv6); None without /proc/net."""
    found, readable = set(), False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines, None)  # the header
                rows = [line.split() for line in lines]
        except OSError:
            continue
        readable = True
        for row in rows:  # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(row) > 9 and row[3] == LISTEN and int(row[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{row[9]}]")
    return found if readable else None


def holds_socket(pid: str, inodes: set) -> bool:
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or another user's
        return False
    for fd in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def command_of(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            words = file.read().split(b"\0")
        text = " ".join(" ".join(word.decode(errors="replace").split()) for word in words if word)  # one line
    except OSError:
        text = ""
    if not text:
        try:
            with open(f"/proc/{pid}/comm") as file:
                text = file.read().strip()
        except OSError:
            text = "a process"
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def lsof_holder(port: int) -> str | None:
    lsof = shutil.which("lsof")
    if lsof is None:
        return None
    try:
        out = subprocess.run([lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"], capture_output=True, text=True,
                             timeout=LSOF_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    fields = {line[0]: line[1:] for line in out.splitlines() if line}  # -F: p<pid>, c<command>, per process
    return f"{fields['c']} (pid {fields['p']})" if "p" in fields and "c" in fields else None
