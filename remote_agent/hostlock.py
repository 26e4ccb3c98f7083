"""One job per GPU host: a lock on the host that every laptop's runs go through.

The lock is the kernel's: an exclusive flock(2) on the lock file, taken by a job's supervisor before the job
starts. The job inherits the supervisor's descriptor, and a flock belongs to that open file description, so the
lock is held while either of them lives: a supervisor killed with -9 leaves it with its job, and the kernel drops
it once both are gone (SIGKILL and the OOM killer included). There is no stale lock to guess about.

There is one lock per host account, protocol.HOST_LOCK in its home (the agent expands `~`), whatever workdir a
registration of the box names: two registrations of one box with two workdirs still run one job at a time.

`<lock>.json` names the holder (run id, run directory, since when, host user, laptop and, once it has started,
the job's process group) so a waiter can say whom it waits for. It is only a note, never the lock: a waiter
believes it only while the supervisor it names or that run's job is alive. Never delete the lock file itself
while runs use it: a new file would be a second, separate lock.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import pwd

from . import durable
from .run_status import alive, now
from .stopping import run_group_alive

SUPERVISOR_MODULE = b"remote_agent.supervisor"


class HostLock:
    def __init__(self, path: str):
        self.path = path
        self.details_path = path + ".json"
        self.fd = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks."""
        if self.fd is None:
            self.fd = open_lock_file(self.path)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        return True

    def announce(self, details: dict) -> None:
        """Write the holder's details for waiters; a lock in a directory we cannot write still locks."""
        try:
            durable.write_json_durably(self.details_path, details)
        except OSError:
            pass

    def release(self) -> None:
        """Take our details away, then the lock (closing the file is what unlocks it)."""
        if self.fd is None:
            return
        holder = read_details(self.details_path)
        if holder is not None and holder.get("supervisor_pid") == os.getpid():
            try:
                os.unlink(self.details_path)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None

    def holder(self) -> dict | None:
        """Who holds the lock, as its holder wrote it; None while that is unknown (not written yet, or
        written by a run whose supervisor and job have both died)."""
        details = read_details(self.details_path)
        if details is None or not isinstance(details.get("supervisor_pid"), int):
            return None
        pid, pgid = details["supervisor_pid"], details.get("pgid")
        if pid == os.getpid():
            return None
        if is_supervisor(pid):
            return details
        if isinstance(pgid, int) and run_group_alive(pgid, str(details.get("run_dir"))):
            return details  # its supervisor was killed, but the job it started holds the lock still
        return None


def open_lock_file(path: str) -> int:
    """Open (creating) the lock file read-only: flock needs no write access, so users who share a lock file
    need only be able to read it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_CREAT, 0o666)
    except PermissionError:  # another user's file in a sticky directory (fs.protected_regular) refuses O_CREAT
        return os.open(path, flags)


def read_details(path: str) -> dict | None:
    try:
        with open(path) as f:
            details = json.load(f)
    except (OSError, ValueError):
        return None
    return details if isinstance(details, dict) else None


def is_supervisor(pid: int, run_dir: str | None = None) -> bool:
    """Alive and still a supervisor (with run_dir: that run's): a pid the kernel has given to some other process,
    even another run's supervisor, is not a holder."""
    if not alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return True  # no /proc to ask: alive is the best we know
    return SUPERVISOR_MODULE in words and (run_dir is None or os.fsencode(run_dir) in words)


def holder_details(run_id: str, run_dir: str, laptop: str | None, argv: list) -> dict:
    """What `<lock>.json` says about the run that holds the lock."""
    return {"run_id": run_id, "run_dir": run_dir, "since": now(), "user": host_user(), "laptop": laptop,
            "argv": argv, "supervisor_pid": os.getpid(), "pgid": None}


def host_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry, as in some containers
        return str(os.getuid())
