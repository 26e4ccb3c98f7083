"""Who owns a project's live tree on the host, and staged trees for the runs that wait for it.

Two kernel locks (flock, freed the moment their holder dies) in `<project>/.offload/`:
- `sync.lock`: one sync at a time into a project directory (two terminals, `run` right after `sync`);
- `tree.lock`: the live tree is in use: by a run's sync from its first byte until its job has ended (the
  agent holds it, then hands it to the job's supervisor, and the job inherits it), or by a job of the project.

A sync that cannot take `tree.lock` never touches the live tree: it writes a *staged tree*,
`.offload/stages/<id>/`, made of hard links to the live files (a few syscalls a file, no copy) plus what it
sent. Hard links are why in-place patching needs a file with one link (patching.py): a stage's links keep
the old bytes whatever a later sync does. A run's supervisor switches its stage in once it holds the locks,
so a run runs the code it was submitted with, however long it waited. A stage of a plain `offload sync`
made while a job ran goes in when that job ends.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import time

from . import durable
from .fence import Fence, OutsideProject
from .protocol import CHANGED_ON_HOST, beside
from .records import Records, identity, matches

SYNC_LOCK = os.path.join(".offload", "sync.lock")
TREE_LOCK = os.path.join(".offload", "tree.lock")
STAGES_DIR = os.path.join(".offload", "stages")
STALE_RUN_STAGE_S = 24 * 3600  # a run stage whose run never started (its laptop went away) goes after this
POLL_S = 0.1


def try_lock(path: str) -> int | None:
    """An fd holding an exclusive flock on path, or None when someone else holds it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def lock_waiting(path: str, on_wait) -> int:
    """Take the lock, calling on_wait() every POLL_S while another holder has it."""
    while True:
        fd = try_lock(path)
        if fd is not None:
            return fd
        on_wait()
        time.sleep(POLL_S)


def unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def new_generation() -> int:
    return time.time_ns()


# --- staged trees -----------------------------------------------------------------------------------------

class Stage:
    def __init__(self, project_dir: str, stage_id: str):
        if not stage_id or "/" in stage_id or stage_id.startswith("."):
            raise ValueError(f"not a stage id: {stage_id!r}")
        self.project_dir, self.id = project_dir, stage_id
        self.root = os.path.join(project_dir, STAGES_DIR, stage_id)
        self.meta_path = self.root + ".json"

    def meta(self) -> dict | None:
        try:
            with open(self.meta_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        try:
            os.unlink(self.meta_path)  # first: a stage without its meta is never switched in
        except FileNotFoundError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def create_stage(project_dir: str, kind: str, live: Records) -> tuple:
    """(Stage, its Records): a copy of the live tree's synced paths, as hard links. Paths that are no longer
    what the sync wrote (a job rewrote them) are left out: they are not the sync's to carry forward."""
    generation = new_generation()
    stage = Stage(project_dir, f"{generation}-{secrets.token_hex(3)}")
    os.makedirs(stage.root)
    fence = Fence(project_dir)
    paths = {}
    for relpath in sorted(live.paths):
        try:
            source = fence.path(relpath)
        except OutsideProject:
            continue
        current = identity(source)
        if not matches(live.paths[relpath], current):
            continue
        target = os.path.join(stage.root, *relpath.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if current[0] == "dir":
            os.makedirs(target, exist_ok=True)
        elif current[0] == "link":
            os.symlink(current[4], target)
        else:
            link_or_copy(source, target)
        paths[relpath] = identity(target)
    records = Records(paths, generation)
    records.save(stage.root)
    write_meta(stage, kind, generation)  # last: only a stage with its records is ever switched in
    return stage, records


def write_meta(stage: Stage, kind: str, generation: int) -> None:
    durable.write_json_durably(stage.meta_path, {"kind": kind, "generation": generation, "created": time.time()})


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(source, target, follow_symlinks=False)  # another filesystem mounted inside the project


def stages(project_dir: str) -> list:
    """(Stage, meta) of every complete stage, oldest first."""
    directory = os.path.join(project_dir, STAGES_DIR)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in sorted(names):
        if name.endswith(".json"):
            stage = Stage(project_dir, name[: -len(".json")])
            meta = stage.meta()
            if meta is not None and os.path.isdir(stage.root):
                found.append((stage, meta))
    return sorted(found, key=lambda item: item[1].get("generation", 0))


def prune(project_dir: str, live_generation: int) -> None:
    """Drop sync stages older than the live tree and run stages whose run never came for them."""
    for stage, meta in stages(project_dir):
        old_sync = meta.get("kind") == "sync" and meta.get("generation", 0) < live_generation
        abandoned = meta.get("kind") == "run" and time.time() - meta.get("created", 0) > STALE_RUN_STAGE_S
        if old_sync or abandoned:
            stage.remove()


# --- switching a stage in ---------------------------------------------------------------------------------

def switch_in(project_dir: str, stage: Stage, consume: bool) -> list:
    """Make the live tree the stage's tree: its files go in by rename (hard links: no copy), paths it no
    longer has go. Only paths the live records still own are touched; returns [relpath, why kept] for the
    rest. The caller holds tree.lock, so no job runs and no sync writes the live tree meanwhile."""
    meta = stage.meta()
    if meta is None or not Records.exist(stage.root):
        return []  # switched in and consumed already (a setup job and its run share one stage)
    live = Records.load(project_dir)
    staged = Records.load(stage.root)
    fence = Fence(project_dir)
    kept, placed = [], {}
    for relpath in sorted(staged.paths):  # parents before their children
        try:
            target = fence.path(relpath)
        except OutsideProject as exc:
            kept.append([relpath, str(exc)])
            continue
        current = identity(target)
        wanted = identity(os.path.join(stage.root, *relpath.split("/")))
        if wanted is None:
            continue
        if current is not None and current[0] == wanted[0] and (current[0] == "dir" or current[3] == wanted[3]):
            placed[relpath] = current  # the very same file (a hard link of it): nothing to do
            continue
        if not live.owns(relpath, current):
            kept.append([relpath, CHANGED_ON_HOST])
            continue
        place(os.path.join(stage.root, *relpath.split("/")), target, wanted, current)
        placed[relpath] = identity(target)
    for relpath in sorted(set(live.paths) - set(staged.paths), reverse=True):  # children before parents
        try:
            target = fence.path(relpath)
        except OutsideProject:
            continue
        current = identity(target)
        if current is None:
            continue
        if not matches(live.paths[relpath], current):
            kept.append([relpath, CHANGED_ON_HOST])
            continue
        remove(target, current)
    Records(placed, int(meta.get("generation", 0))).save(project_dir)
    if consume:
        stage.remove()
    return kept


def place(source: str, target: str, wanted: list, current: list | None) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if wanted[0] == "dir":
        if current is not None and current[0] != "dir":
            os.unlink(target)
        os.makedirs(target, exist_ok=True)
        return
    if current is not None and current[0] == "dir":
        os.rmdir(target)  # an empty directory the sync made; one a run filled is not the live records'
    part = beside(target)
    if os.path.lexists(part):
        os.unlink(part)
    if wanted[0] == "link":
        os.symlink(wanted[4], part)
    else:
        link_or_copy(source, part)
    os.replace(part, target)


def remove(target: str, current: list) -> None:
    if current[0] == "dir":
        try:
            os.rmdir(target)
        except OSError:
            pass  # not empty: what is inside is somebody's
    else:
        os.unlink(target)


def settle(project_dir: str) -> list:
    """When a job that owned the live tree ends: the newest plain sync staged meanwhile goes in, when it is
    newer than the live tree (a run switched in an older stage after it). Returns what was kept."""
    live_generation = Records.load(project_dir).generation
    pending = [(stage, meta) for stage, meta in stages(project_dir)
               if meta.get("kind") == "sync" and meta.get("generation", 0) > live_generation]
    kept = switch_in(project_dir, pending[-1][0], consume=False) if pending else []
    prune(project_dir, Records.load(project_dir).generation)
    return kept


