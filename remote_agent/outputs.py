"""What a run wrote: the files under the project's top-level out*/ directories that a run created, changed
or deleted, recorded in <run_dir>/outputs.json when it ends, so that `offload fetch RUN` returns that run's
versions, and says which later run changed a file since, instead of silently returning the later one's.

All runs of a project share its directory on the host. The supervisor snapshots (size, mtime_ns, inode) of
every file there just before the job starts (stat only: a tree of 100k files costs a moment, not a hashing)
and, once the job has ended, hashes only what is new or changed, seeding fetch's hash cache as it goes.
Links are never followed (a file reached through one is fetched as before, claimed by no run), and offload's
own part files are left out.
"""
from __future__ import annotations

import fnmatch
import glob
import json
import os
import time
from typing import Optional

from .hashes import HashCache, file_sha256
from .protocol import CHANGED, DELETED, NEWER, PART_SUFFIX, Withheld

RECORDED_DIRS = "out*"  # top-level directories a run's record covers: the default patterns' out/, and out-ft/ and the like
OUTPUTS = "outputs.json"  # in the run directory on the host
RUN_RECORDS = ("*", "*/job")  # run directories under <project>/.offload/runs/ (a local run's is <id>/job)


def scan(root: str) -> dict:
    """relpath -> [size, mtime_ns, inode] of each regular file under the top-level out*/ directories of root."""
    found = {}
    try:
        with os.scandir(root) as entries:
            stack = [(entry.path, entry.name) for entry in entries
                     if fnmatch.fnmatchcase(entry.name, RECORDED_DIRS) and entry.is_dir(follow_symlinks=False)]
    except OSError:
        return found
    while stack:
        directory, relpath = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.endswith(PART_SUFFIX):
                        continue
                    rel = f"{relpath}/{entry.name}"
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, rel))
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        found[rel] = [st.st_size, st.st_mtime_ns, st.st_ino]
        except OSError:  # a directory we may not read, or one deleted as we walked: nothing of it to record
            continue
    return found


def diff(before: dict, after: dict) -> tuple:
    """Pure: (relpaths new or changed, relpaths deleted), each sorted, between two scans."""
    changed = sorted(path for path, key in after.items() if before.get(path) != key)
    deleted = sorted(path for path in before if path not in after)
    return changed, deleted


def snapshot(project_dir: str) -> Optional[dict]:
    """The scan the run's record is measured against; None (no record) when the project cannot be read."""
    root = os.path.realpath(project_dir)
    return {"root": root, "files": scan(root)} if os.path.isdir(root) else None


def record(run_dir: str, run_id: str, before: Optional[dict]) -> None:
    """After the job has ended: write <run_dir>/outputs.json with what it wrote, changed and deleted. A record
    that cannot be made leaves none, and fetch says the run's own versions are unknown."""
    if before is None:
        return
    root = before["root"]
    changed, deleted = diff(before["files"], scan(root))
    cache = HashCache(root)
    files = {}
    for relpath in changed:
        entry = hashed(os.path.join(root, relpath), cache)
        if entry is not None:
            files[relpath] = entry
    for relpath in deleted:
        files[relpath] = {"deleted": True}
    try:
        write_durably(os.path.join(run_dir, OUTPUTS),
                      {"run_id": run_id, "ended_at": round(time.time(), 3), "files": files})
    except OSError:
        return
    cache.save()


def hashed(path: str, cache: HashCache) -> Optional[dict]:
    """{sha256, size, mtime_ns} of a file, read again if it changed while it was read; None once it is gone.
    The digest goes into fetch's cache whatever its age: the job that wrote it has exited. (Still changing the
    second time, it is recorded as read, and fetch, hashing it afresh, finds it changed since.)"""
    for _ in range(2):
        try:
            before = os.stat(path)
            digest = file_sha256(path)
            after = os.stat(path)
        except OSError:
            return None
        key = [after.st_size, after.st_mtime_ns, after.st_ino]
        if [before.st_size, before.st_mtime_ns, before.st_ino] == key:
            cache.remember(path, key, digest)
            break
    return {"sha256": digest, "size": after.st_size, "mtime_ns": after.st_mtime_ns}


def write_durably(path: str, data: dict) -> None:
    """Temp file, fsync, rename, fsync of the directory: after a crash the record is whole or absent."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: str) -> Optional[dict]:
    """A run's record, or None when it has none (an older run, a lost supervisor, one still running)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or "ended_at" not in data:
        return None
    return data


def load_others(root: str, own_path: str) -> list:
    """The records of the project's other runs, newest first."""
    own = os.path.realpath(own_path)
    found = []
    for pattern in RUN_RECORDS:
        for path in glob.glob(os.path.join(glob.escape(root), ".offload", "runs", pattern, OUTPUTS)):
            data = load(path) if os.path.realpath(path) != own else None
            if data is not None:
                found.append(data)
    return sorted(found, key=lambda data: data["ended_at"], reverse=True)


def own_versions(run: dict, others: list, present: dict, wanted) -> tuple:
    """Pure: of the `present` files (relpath -> sha256, what the patterns match now), those that are still the
    version `run` left (its own, or one no later run touched), and a Withheld for each of the rest and for each
    file the run wrote that is gone now and that `wanted(relpath)` selects. `others`: newest first."""
    mine = run["files"]
    # the run's own other nodes, should they share the directory, are not later runs
    later = [other for other in others if other["ended_at"] > run["ended_at"] and other.get("run_id") != run.get("run_id")]
    listed, withheld = [], []
    for path, sha in sorted(present.items()):
        entry = mine.get(path)
        if entry is None:
            untouched = not any(path in other["files"] for other in later)
        else:
            untouched = entry.get("sha256") == sha
        if untouched:
            listed.append(path)
        else:
            writer = next((other["run_id"] for other in later if other["files"].get(path, {}).get("sha256") == sha), None)
            withheld.append(Withheld(path, NEWER if entry is None else CHANGED, writer))
    for path, entry in sorted(mine.items()):
        if path not in present and not entry.get("deleted") and wanted(path):
            deleter = next((other["run_id"] for other in later if other["files"].get(path, {}).get("deleted")), None)
            withheld.append(Withheld(path, DELETED, deleter))
    return listed, withheld
