"""`offload hosts clean`: the project directories in a workdir, with their size and last use, and the removal of
one that nothing uses.

A project directory is a real directory directly in the workdir (never a symlink, never `.agent`) that a sync
prepared (it has `.offload/`). One is in use while a sync or a job holds its locks (tree.py) or a run in it has
not ended (waiting for the GPU lock included); removing takes both locks first, so nothing can start in it
meanwhile, and never follows a symlink out of it.
"""
from __future__ import annotations

import os
import shutil
import stat
import time

from . import host_dirs, tree
from .protocol import RequestError
from .run_status import LIVE_STATES, read_status

RUNS_DIR = os.path.join(".offload", "runs")
STARTING_FOR_S = 120  # a run "starting" longer than this never started (a job starts within 15 s: jobs.py)


def project_dirs(workdir: str) -> list:
    """Each project directory of the workdir: name, size in bytes, last use (a Unix time), and in_use (why, or
    None)."""
    root = host_dirs.absolute(workdir, "a workdir")
    if not os.path.isdir(root):
        return []
    found = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not is_project_dir(path, name):
            continue
        found.append({"name": name, "size": tree_size(path), "last_used": last_used(path), "in_use": in_use(path)})
    return found


def remove(workdir: str, name: str) -> dict:
    """Remove one project directory unless it is in use now: {"removed": True}, or {"removed": False, "in_use": WHY}."""
    path = host_dirs.project_dir_of(host_dirs.absolute(workdir, "a workdir"), host_dirs.checked_project_name(name))
    if not is_project_dir(path, name):
        raise RequestError("bad_request", f"{path} is not a project directory offload made")
    locks = [tree.try_lock(os.path.join(path, lock)) for lock in (tree.SYNC_LOCK, tree.TREE_LOCK)]
    try:
        busy = "a sync or a job holds it" if None in locks else live_run(path)
        if busy:
            return {"removed": False, "in_use": busy}
        shutil.rmtree(path)  # removes symlinks inside, never what they point to
    finally:
        for fd in locks:
            tree.unlock(fd)
    return {"removed": True}


def is_project_dir(path: str, name: str) -> bool:
    if name.startswith("."):  # .agent, and anything else of offload's own
        return False
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and os.path.isdir(os.path.join(path, ".offload")) and \
        not os.path.islink(os.path.join(path, ".offload"))


def tree_size(path: str) -> int:
    """Bytes of the files under path, each inode once, symlinks not followed."""
    seen, total = set(), 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def last_used(path: str) -> float:
    """The latest of the last sync (its record) and each run's directory: what offload last did there."""
    candidates = [os.path.join(path, ".offload", "synced.json"), os.path.join(path, RUNS_DIR)]
    runs = os.path.join(path, RUNS_DIR)
    if os.path.isdir(runs):
        candidates += [os.path.join(runs, run, name) for run in os.listdir(runs) for name in ("", "status.json")]
    times = []
    for candidate in candidates:
        try:
            times.append(os.lstat(candidate).st_mtime)
        except OSError:
            pass
    return max(times) if times else os.lstat(path).st_mtime


def in_use(path: str) -> str | None:
    locks = []
    try:
        for lock in (tree.SYNC_LOCK, tree.TREE_LOCK):
            fd = tree.try_lock(os.path.join(path, lock))
            locks.append(fd)
            if fd is None:
                return "a sync or a job holds it"
        return live_run(path)
    finally:
        for fd in locks:
            tree.unlock(fd)


def live_run(path: str) -> str | None:
    runs = os.path.join(path, RUNS_DIR)
    for run in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        try:
            state = read_status(os.path.join(runs, run))["state"]
        except (OSError, ValueError, RequestError):
            continue
        if state == "starting" and time.time() - os.lstat(os.path.join(runs, run)).st_mtime > STARTING_FOR_S:
            continue  # no supervisor ever wrote its status: the start failed long ago
        if state in LIVE_STATES:
            return f"run {run} is {state}"
    return None
