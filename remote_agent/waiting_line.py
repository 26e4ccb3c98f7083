"""The order in which runs waiting for a host's GPU lock start: first come, first served, across laptops.

The lock (hostlock.py) says who runs; the line says who is next. Each waiting run's supervisor holds a ticket
in `<lock>.queue/`: a file named by the next number of the line (taken under a flock on its counter, and above
every ticket there, so two submissions never share one and a damaged counter never reorders the line),
saying who it is. A supervisor tries the lock only while no live ticket is ahead of its own, and removes its
ticket once it holds the lock or gives up. A ticket whose supervisor is gone (killed -9, the host rebooted)
is removed by whoever comes across it: a dead run never blocks the line. It is all files on the host, so the
order survives the agent, the laptop and sshd restarting, and a run whose laptop is gone still runs.
"""
from __future__ import annotations

import fcntl
import os
import signal

from . import durable
from .hostlock import HostLock, is_supervisor, read_details

QUEUE_SUFFIX = ".queue"
COUNTER = "counter"
TICKET_SUFFIX = ".json"


def line_dir(lock_path: str) -> str:
    return lock_path + QUEUE_SUFFIX


def take_ticket(lock_path: str, details: dict) -> str:
    """Join the end of the line; the ticket's path."""
    directory = line_dir(lock_path)
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, COUNTER), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held only for these few syscalls: one number per ticket
        try:
            counted = int(os.pread(fd, 32, 0).strip() or b"0")
        except ValueError:  # a counter torn by a power cut: the tickets themselves say where the line is
            counted = 0
        number = max([counted, *(number for number, _ in numbered(directory))]) + 1
        path = os.path.join(directory, f"{number:012d}{TICKET_SUFFIX}")
        durable.write_json_durably(path, {**details, "number": number})
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{number}\n".encode(), 0)
    finally:
        os.close(fd)
    return path


def leave(ticket: str) -> None:
    try:
        os.unlink(ticket)
    except FileNotFoundError:
        pass


def numbered(directory: str) -> list:
    """(number, path) of every ticket in the line directory, in order."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stem = name[:-len(TICKET_SUFFIX)]
        if name.endswith(TICKET_SUFFIX) and stem.isdigit():
            found.append((int(stem), os.path.join(directory, name)))
    return sorted(found)


def waiting(lock_path: str) -> list:
    """The live tickets' contents, first first; each dead one met on the way is removed."""
    line = []
    for _, path in numbered(line_dir(lock_path)):
        details = read_details(path)
        if details is None:
            continue  # being written (or removed) this very moment: the next look sees it whole
        if not is_waiting_supervisor(details):
            leave(path)
            continue
        line.append({**details, "ticket": path})
    return line


def ahead_of(ticket: str, lock_path: str) -> list:
    """The live tickets ahead of ours."""
    line = waiting(lock_path)
    ours = [index for index, details in enumerate(line) if details["ticket"] == ticket]
    return line[:ours[0]] if ours else line


def is_waiting_supervisor(details: dict) -> bool:
    """The ticket's supervisor is alive, and is the one of that run (hostlock.is_supervisor)."""
    pid, run_dir = details.get("supervisor_pid"), details.get("run_dir")
    return isinstance(pid, int) and isinstance(run_dir, str) and is_supervisor(pid, run_dir)

def describe(lock_path: str, clear_laptop: str | None = None) -> dict:
    """Who holds the lock and who waits, in order (place 1 goes next); with clear_laptop, that laptop's waiting
    runs are stopped first (their supervisors record "stopped while waiting" and leave the line)."""
    cleared = []
    for details in waiting(lock_path) if clear_laptop is not None else []:
        if details.get("laptop") == clear_laptop:
            try:
                os.kill(details["supervisor_pid"], signal.SIGTERM)
                cleared.append(details.get("run_id"))
            except ProcessLookupError:
                pass
    shown = ("run_id", "run_dir", "laptop", "argv", "submitted")
    line = [{key: details.get(key) for key in shown} for details in waiting(lock_path)
            if details.get("run_id") not in cleared]
    for place, details in enumerate(line, 1):
        details["place"] = place
    return {"holder": HostLock(lock_path).holder(), "waiting": line, "cleared": cleared}
