"""The host side of a sync: one sync at a time into a project, into its live tree or a staged one, and what
it writes there.

Files are written under a temporary name in their final directory and renamed when complete, so a
file under its final name is always whole, and durable before its rename (receiving.py, durable.py).
Nothing is destroyed that the sync did not write:
`.offload/synced.json` (records.py) says what each synced path was once written, and a path is
overwritten or deleted only while it still is that; every parent is resolved inside the project
(fence.py). One sync at a time writes a project, and never its live tree while a job of the project
runs: it writes a staged tree instead (tree.py). What the host has before a sync is manifest.py's.
"""
from __future__ import annotations

import os

from . import host_dirs, sidecars, tree
from .fence import Fence, OutsideProject
from .journals import finish_patches
from .protocol import RequestError
from .receiving import Receiving, with_parents
from .records import Records, identity


def checked_relpath(relpath: str) -> str:
    """A path inside the project, as a sync names it: never absolute, climbing, or into its `.offload/`."""
    parts = relpath.split("/") if isinstance(relpath, str) else [""]
    if not relpath or parts[0] in ("", ".offload") or "" in parts or "." in parts or ".." in parts:
        raise RequestError("bad_request", f"refusing path outside the project: {relpath!r}")
    return relpath


class Target:
    """Where one sync writes: the project's live tree, or (while a job owns it) a staged tree."""

    def __init__(self, project_dir: str, root: str, records: Records, stage=None):
        self.project_dir, self.root, self.records, self.stage = project_dir, root, records, stage
        self.fence = Fence(root)
        self.live = stage is None

    def path(self, relpath: str) -> str:
        return self.fence.path(checked_relpath(relpath))

    def save(self) -> None:
        if self.live:
            self.records.generation = tree.new_generation()
        self.records.save(self.root)
        if self.live:
            tree.prune(self.project_dir, self.records.generation)


class Receiver:
    def __init__(self):
        self.targets = {}  # project_dir -> Target of the sync in progress (or the last one)
        self.expected = {}  # project_dir -> every path the laptop has (its apply request names them)
        self.sync_lock = None  # fd: this agent's sync in progress
        self.sync_tree_lock = None  # fd: the live tree, for the sync's duration only
        self.held_trees = {}  # project_dir -> fd of tree.lock kept for the run this sync is for
        self.unsaved = None  # the Target whose records the last apply has yet to save (right after its reply)

    # --- a sync's beginning and end ---

    def begin(self, project_dir: str, for_run: bool, on_wait) -> dict:
        """Take the project's sync lock (waiting for another sync), then the live tree if no job owns it;
        else a staged tree is made. for_run: the tree lock is kept for the run's start (held_tree)."""
        self.end_sync()
        self.release_tree(project_dir)
        self.sync_lock = tree.lock_waiting(os.path.join(project_dir, tree.SYNC_LOCK), on_wait)
        tree_fd = tree.try_lock(os.path.join(project_dir, tree.TREE_LOCK))
        if tree_fd is not None:
            records = finish_patches(project_dir)
            self.targets[project_dir] = Target(project_dir, project_dir, records)
            if for_run:
                self.held_trees[project_dir] = tree_fd
            else:
                self.sync_tree_lock = tree_fd
            return {"stage": None}
        stage, records = tree.create_stage(project_dir, "run" if for_run else "sync",
                                           Records.load(project_dir, resolve=Fence(project_dir).path))
        self.targets[project_dir] = Target(project_dir, stage.root, records, stage)
        return {"stage": stage.id}

    def end_sync(self) -> None:
        self.save_records()
        tree.unlock(self.sync_tree_lock)
        tree.unlock(self.sync_lock)
        self.sync_tree_lock = self.sync_lock = None

    def release_tree(self, project_dir: str | None = None) -> None:
        for held in [project_dir] if project_dir else list(self.held_trees):
            tree.unlock(self.held_trees.pop(held, None))

    def target(self, project_dir: str) -> Target:
        found = self.targets.get(project_dir) if isinstance(project_dir, str) else None
        if found is None:  # a request without a prepare first (a test's raw agent): the live tree, unlocked
            project_dir = host_dirs.project_dir(project_dir)
            found = self.targets[project_dir] = Target(project_dir, project_dir, Records.load(project_dir))
        return found

    # --- requests ---

    def blocks(self, project_dir: str, paths: list) -> tuple:
        """The stored block digests of those paths whose sidecar still matches the file (sidecars.py)."""
        target = self.target(project_dir)
        located = []
        for relpath in paths:
            try:
                located.append((relpath, target.path(relpath)))
            except OutsideProject:
                continue
        return sidecars.stored_digests(project_dir, located)

    def apply(self, request: dict, inp) -> dict:
        """Delete, then receive `put` messages until `end`. The records are saved even if the link drops.
        With record false (files put back for --resume), nothing is deleted and nothing recorded: those files
        are the run's, not the sync's. force: overwrite paths the sync did not write (never delete them)."""
        project_dir = request["project_dir"]
        target = self.target(project_dir)
        target.fence.forget()  # a run or a person may have changed directories since the last apply
        if "paths" in request:
            self.expected[project_dir] = set(request["paths"])
        tally = {"written": 0, "deleted": 0, "bytes": 0, "kept": []}
        receiving = Receiving(target, tally, record=request.get("record", True) is not False,
                              force=bool(request.get("force")))
        if not receiving.record:
            failure = receiving.receive(inp, None)
            if failure is not None:
                raise failure
            return tally
        for relpath in request.get("forget", []):
            target.records.paths.pop(relpath, None)
        for relpath in request.get("adopt", []):  # the laptop's file to the ns (a sync killed before its records)
            try:
                found = identity(target.path(relpath))
            except OutsideProject:
                continue
            if found is not None:
                target.records.paths[relpath] = found
        try:  # after a failure, keep reading so the stream stays in step; report it at the end
            failure = self.delete(receiving, project_dir, request.get("delete", []), None)
            failure = receiving.receive(inp, failure)
            # Paths the patches of this apply were built from (a renamed data dir): deleted once those are in.
            failure = self.delete(receiving, project_dir, request.get("delete_after", []), failure)
            if failure is not None:
                raise failure
        except BaseException:
            self.save_records(target)  # what was written is ours, even when the sync failed
            raise
        if target.live:
            # The reply need not wait for the records: every rename's outcome is already durable in the
            # intents log (records.adopt_pending), and this agent holds the tree until it has saved them.
            self.unsaved = target
        else:
            self.save_records(target)  # a staged tree's records: a job's end may read them at any moment
        return tally

    def delete(self, receiving: Receiving, project_dir: str, deletes: list, failure: Exception | None):
        """Delete those paths, children before parents; returns the first failure."""
        still_there = with_parents(self.expected.get(project_dir, set())) if deletes else set()  # only if needed
        for relpath in sorted(deletes, reverse=True):
            try:
                receiving.delete(relpath, still_there)
            except (OSError, RequestError) as exc:
                failure = failure or exc
        return failure

    def save_records(self, target: Target | None = None) -> None:
        target, self.unsaved = target or self.unsaved, None
        if target is not None:
            try:
                target.save()
            except OSError:
                pass  # on a full disk: the sync's own error says more; the intents log keeps what it wrote
