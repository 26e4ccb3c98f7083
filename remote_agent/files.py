"""The host side of a sync: report what is there, write what arrives, delete what the laptop says.

Files are written under a temporary name in their final directory and renamed when complete, so a
file under its final name is always whole. Nothing is destroyed that the sync did not write:
`.offload/synced.json` (records.py) says what each synced path was once written, and a path is
overwritten or deleted only while it still is that; every parent is resolved inside the project
(fence.py). One sync at a time writes a project, and never its live tree while a job of the project
runs: it writes a staged tree instead (tree.py).
"""
from __future__ import annotations

import os
import shutil
import stat

from . import patching, protocol, tree
from .fence import Fence, OutsideProject
from .patching import same_file
from .records import Records, identity, identity_of, matches

PART_SUFFIX = ".offload-part"
CHANGED_ON_HOST = "changed on the host since it was synced"
NOT_WRITTEN_BY_OFFLOAD = "on the host already, and not written by offload"


class RequestError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def project_dir_of(workdir: str, project: str) -> str:
    return os.path.join(os.path.abspath(os.path.expanduser(workdir)), project)


def prepare(workdir: str, project: str) -> dict:
    """Create the project directory and prove it is writable before anything is sent."""
    project_dir = project_dir_of(workdir, project)
    os.makedirs(os.path.join(project_dir, ".offload"), exist_ok=True)
    probe = os.path.join(project_dir, ".offload", "write-probe")
    with open(probe, "wb") as f:
        f.write(b"ok")
    os.unlink(probe)
    return {"project_dir": project_dir, "free_bytes": shutil.disk_usage(project_dir).free}


def checked_relpath(relpath: str) -> str:
    parts = relpath.split("/") if isinstance(relpath, str) else [""]
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".offload":
        raise RequestError("bad_request", f"refusing path outside the project: {relpath!r}")
    return relpath


def describe(path: str) -> list | None:
    """[kind, size, mtime_ns, mode, target] of what is at path, or None."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # the latter: a file now stands where a parent dir was
        return None
    return description_of(st, path)


def description_of(st: os.stat_result, path: str) -> list:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ["link", 0, st.st_mtime_ns, mode, os.readlink(path)]
    if stat.S_ISDIR(st.st_mode):
        return ["dir", 0, st.st_mtime_ns, mode, ""]
    return ["file", st.st_size, st.st_mtime_ns, mode, ""]


class ChangedMeanwhile(Exception):
    """A job or a person wrote the path while the sync received it: theirs now, kept."""


class Target:
    """Where one sync writes: the project's live tree, or (while a job owns it) a staged tree."""

    def __init__(self, project_dir: str, root: str, records: Records, stage=None):
        self.project_dir, self.root, self.records, self.stage = project_dir, root, records, stage
        self.fence = Fence(root)
        self.live = stage is None

    def path(self, relpath: str) -> str:
        return self.fence.path(checked_relpath(relpath))

    def save(self, write_json) -> None:
        if self.live:
            self.records.generation = tree.new_generation()
        self.records.save(self.root, write_json)
        if self.live:
            tree.prune(self.project_dir, self.records.generation)


class Receiver:
    def __init__(self, write_json):
        self.write_json = write_json
        self.targets = {}  # project_dir -> Target of the sync in progress (or the last one)
        self.expected = {}  # project_dir -> every path the laptop has (its apply, or manifest, request names them)
        self.sync_lock = None  # fd: this agent's sync in progress
        self.sync_tree_lock = None  # fd: the live tree, for the sync's duration only
        self.held_trees = {}  # project_dir -> fd of tree.lock kept for the run this sync is for

    # --- a sync's beginning and end ---

    def begin(self, project_dir: str, for_run: bool, on_wait) -> dict:
        """Take the project's sync lock (waiting for another sync), then the live tree if no job owns it;
        else a staged tree is made. for_run: the tree lock is kept for the run's start (held_tree)."""
        self.end_sync()
        self.release_tree(project_dir)
        self.sync_lock = tree.lock_waiting(os.path.join(project_dir, tree.SYNC_LOCK), on_wait)
        tree_fd = tree.try_lock(os.path.join(project_dir, tree.TREE_LOCK))
        live_fence = Fence(project_dir)
        if tree_fd is not None:
            records = finish_patches(project_dir, self.write_json)
            self.targets[project_dir] = Target(project_dir, project_dir, records)
            if for_run:
                self.held_trees[project_dir] = tree_fd
            else:
                self.sync_tree_lock = tree_fd
            return {"stage": None}
        stage, records = tree.create_stage(project_dir, "run" if for_run else "sync",
                                           Records.load(project_dir, resolve=live_fence.path), self.write_json)
        self.targets[project_dir] = Target(project_dir, stage.root, records, stage)
        return {"stage": stage.id}

    def end_sync(self) -> None:
        tree.unlock(self.sync_tree_lock)
        tree.unlock(self.sync_lock)
        self.sync_tree_lock = self.sync_lock = None

    def release_tree(self, project_dir: str | None = None) -> None:
        for held in [project_dir] if project_dir else list(self.held_trees):
            tree.unlock(self.held_trees.pop(held, None))

    def target(self, project_dir: str) -> Target:
        found = self.targets.get(project_dir)
        if found is None:  # a request without its prepare (an old laptop): the live tree, unlocked
            project_dir = os.path.abspath(os.path.expanduser(project_dir))
            found = self.targets[project_dir] = Target(project_dir, project_dir, Records.load(project_dir))
        return found

    # --- requests ---

    def manifest(self, project_dir: str, paths: list | None = None) -> dict:
        """What is at the paths syncs put there (and at `paths`, when given): [kind, size, mtime_ns, mode,
        target]; `changed`: synced paths that are no longer what the sync wrote (kept unless forced)."""
        target = self.target(project_dir)
        if paths is not None:
            self.expected[project_dir] = set(paths)
        present, changed, refused = {}, [], []
        for relpath in set(paths or ()) | set(target.records.paths):
            try:
                path = target.path(relpath)
            except OutsideProject as exc:
                refused.append([relpath, str(exc)])
                continue
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            present[relpath] = description_of(st, path)
            record = target.records.paths.get(relpath)
            if record is not None and not matches(record, identity_of(st, path)):
                changed.append(relpath)
        return {"present": present, "synced": sorted(target.records.paths), "changed": sorted(changed),
                "refused": refused, "stage": target.stage.id if target.stage else None}

    def blocks(self, project_dir: str, paths: list) -> tuple:
        """The stored block digests of those paths whose sidecar still matches the file (patching.py)."""
        target = self.target(project_dir)
        located = []
        for relpath in paths:
            try:
                located.append((relpath, target.path(relpath)))
            except OutsideProject:
                continue
        return patching.stored_digests(project_dir, located)

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
        try:
            failure = None  # after a failure, keep reading so the stream stays in step; report it at the end
            still_there = with_parents(self.expected.get(project_dir, set()))
            for relpath in sorted(request.get("delete", []), reverse=True):  # children before parents
                try:
                    receiving.delete(relpath, still_there)
                except (OSError, RequestError) as exc:
                    failure = failure or exc
            failure = receiving.receive(inp, failure)
            if failure is not None:
                raise failure
        finally:
            try:
                target.save(self.write_json)  # what was written is ours, even when the sync failed
            except OSError:
                pass  # on a full disk: the failure being raised says more than this one
        return tally


class Receiving:
    """One apply's writes and deletes into a target, with the tally the laptop gets back."""

    def __init__(self, target: Target, tally: dict, record: bool, force: bool):
        self.target, self.tally, self.record, self.force = target, tally, record, force
        self.made_dirs = set()  # directories created or found during this apply

    def keep(self, relpath: str, why: str) -> None:
        self.tally["kept"].append([relpath, why])

    def delete(self, relpath: str, still_there: set) -> None:
        records = self.target.records
        record = records.paths.pop(relpath, None)
        try:
            path = self.target.path(relpath)
        except OutsideProject as exc:
            self.keep(relpath, str(exc))
            return
        current = identity(path)
        if current is None:
            return
        if not matches(record, current):
            self.keep(relpath, CHANGED_ON_HOST)  # never deleted, --force or not: it is somebody's now
            return
        self.tally["deleted"] += remove(path, current)
        patching.forget(self.target.project_dir, relpath)
        remove_emptied_parents(self.target, relpath, still_there)

    def may_replace(self, relpath: str, current: list | None, path: str) -> str | None:
        """Why the sync must leave what is at path (current) alone, or None when it may replace it."""
        if self.force or not self.record:
            return None
        if self.target.records.owns(relpath, current) or (current[0] == "dir" and is_empty_dir(path)):
            return None  # an empty directory holds nothing of anybody's: write_entry replaces it
        return CHANGED_ON_HOST if relpath in self.target.records.paths else NOT_WRITTEN_BY_OFFLOAD

    def receive(self, inp, failure: Exception | None) -> Exception | None:
        """Write `put` and `patch` entries until `end`; returns the first failure (later entries are read and
        dropped). A big file's `put` is followed by its block digests (`digests`), kept for later patches."""
        just_put = None
        target = self.target
        while True:
            message = protocol.read_message(inp)
            if message is None:
                raise protocol.ProtocolError("the laptop went away in the middle of a sync")
            if message["t"] == "end":
                return failure
            if message["t"] not in ("put", "patch", "digests"):
                raise RequestError("bad_request", f"unexpected {message['t']!r} during a sync")
            if failure is not None:
                drain(inp, int(message.get("size", 0)))
                continue
            relpath = message.get("path")
            try:
                try:
                    path = target.path(relpath)
                except OutsideProject as exc:
                    drain(inp, int(message.get("size", 0)))
                    self.keep(relpath, str(exc))
                    continue
                except RequestError:
                    drain(inp, int(message.get("size", 0)))
                    raise
                if message["t"] == "digests":
                    self.tally["bytes"] += patching.store_digests(target.project_dir, message, inp,
                                                                  just_put == relpath, path)
                    continue
                just_put = None
                current = identity(path)
                why = self.may_replace(relpath, current, path)
                if why is not None:
                    drain(inp, int(message.get("size", 0)))
                    self.keep(relpath, why)
                    continue
                if message["t"] == "patch":
                    applied, received = patch(target, relpath, path, message, inp)
                    self.tally["bytes"] += received
                    if not applied:
                        continue  # the laptop's file changed while it was read: it sends it again
                else:
                    received, committed = put(path, message, inp, self.made_dirs, current, self.owned_now(relpath))
                    self.tally["bytes"] += received
                    if not committed:
                        continue  # the laptop's file changed while it was read: it sends it again
                    just_put = relpath
            except ChangedMeanwhile:
                self.keep(relpath, CHANGED_ON_HOST)
                continue
            except (OSError, RequestError) as exc:
                failure = exc
                continue
            if self.record:
                written = identity(path)
                if written is not None:
                    target.records.paths[relpath] = written
            self.tally["written"] += 1

    def owned_now(self, relpath: str):
        """Checked again just before the rename: a job or a person may have written the path meanwhile."""
        if self.force or not self.record:
            return lambda path: True
        return lambda path: self.target.records.owns(relpath, identity(path))


def finish_patches(project_dir: str, write_json) -> Records:
    """Redo the patches a killed agent left half-applied (patching.py), and record the files they finished:
    a patch is only ever applied to a file the sync owned, so the result is the sync's too. The caller holds
    the project's tree, so no job reads those files meanwhile. Returns the live records."""
    fence = Fence(project_dir)
    redone = patching.recover(project_dir, fence)
    records = Records.load(project_dir, resolve=fence.path)
    if redone:
        for relpath in redone:
            found = identity(fence.path(relpath))
            if found is not None and relpath in records.paths:
                records.paths[relpath] = found
        records.save(project_dir, write_json)
    return records


def patch(target: Target, relpath: str, path: str, message: dict, inp) -> tuple:
    """Apply one patch (patching.py); its blob is always consumed from the stream."""
    try:
        return patching.receive_patch(target.project_dir, relpath, path, message, inp, in_place_ok=target.live)
    except patching.StalePatch as exc:
        raise RequestError("stale", f"{exc}; sync again to send it whole") from None
    except OSError as exc:
        if exc.filename is None:
            exc.filename = relpath
        raise


def with_parents(paths: set) -> set:
    """The paths and every directory above them: "a/b/c" -> {"a/b/c", "a/b", "a"}."""
    found = set()
    for path in paths:
        parts = path.split("/")
        found.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return found


def remove_emptied_parents(target: Target, relpath: str, still_there: set) -> None:
    """A directory gone from the laptop left empty by deleting relpath goes too, as with rsync --delete;
    one the laptop still has, or one that holds anything else (a run's files), stays."""
    parts = relpath.split("/")[:-1]
    while parts and "/".join(parts) not in still_there:
        try:
            os.rmdir(target.path("/".join(parts)))
        except (OSError, OutsideProject):  # not empty, already gone, or a link we do not follow
            return
        parts.pop()


def remove(path: str, current: list) -> int:
    if current[0] == "dir":
        try:
            os.rmdir(path)  # only empty ones: a directory a run filled is the run's
        except OSError:
            return 0
    else:
        os.unlink(path)
    return 1


def put(path: str, message: dict, inp, made_dirs: set, existing: list | None, still_ours) -> tuple:
    """Write one entry; (file bytes received, whether it now stands under its final name). A file's blob is
    its bytes and then one byte from the laptop: 1 if the file stayed the same while it was read, else 0 and
    the part file goes, leaving the host's older copy whole. The blob is always consumed from the stream."""
    blob = int(message.get("size", 0)) if message["kind"] == "file" else 0
    pieces = protocol.read_exactly(inp, max(blob - 1, 0))
    status = []

    def complete() -> bool:
        status.extend(b"".join(protocol.read_exactly(inp, 1)))
        return status == [1]

    try:
        committed = write_entry(path, message, pieces, complete, made_dirs, existing, still_ours)
    except OSError as exc:
        if exc.filename is None:  # a failed write or close names no file: say which one it was
            exc.filename = message["path"]
        raise
    finally:
        for _ in pieces:  # a no-op when the write consumed them all
            pass
        if blob and not status:
            complete()
    return max(blob - 1, 0), committed


def write_entry(path: str, message: dict, pieces, complete, made_dirs: set, existing: list | None, still_ours) -> bool:
    """Put the entry at path (where `existing` is, records.identity); False when complete() says the file's
    bytes are not one version of it."""
    kind, mode, mtime_ns = message["kind"], int(message["mode"]) & 0o7777, int(message["mtime_ns"])
    parent = os.path.dirname(path)
    if parent not in made_dirs:  # 100 files to a directory: one makedirs for them all
        os.makedirs(parent, exist_ok=True)
        made_dirs.add(parent)
    if kind == "dir":
        if existing is not None and existing[0] != "dir":
            os.unlink(path)
        os.makedirs(path, exist_ok=True)
        return True
    if existing is not None and existing[0] == "dir":
        try:
            os.rmdir(path)  # an empty directory, left where the laptop now has a file: nothing of a run's is lost
        except OSError:
            raise RequestError("bad_request",
                               f"{message['path']} is a directory on the host; remove it there first") from None
    part = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + PART_SUFFIX)
    if kind == "link":
        remove_leftover(part)
        os.symlink(message["target"], part)
        ours = os.lstat(part)
    else:
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            remove_leftover(part)
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        ours = os.fstat(fd)
    try:
        if kind == "link":
            os.utime(part, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        else:
            write_part(fd, pieces, mode, mtime_ns)
            if not complete():
                os.unlink(part)
                return False
        if not same_file(part, ours):
            raise RequestError("busy", f"another sync is writing {message['path']}; try again when it is done")
        if not still_ours(path):
            raise ChangedMeanwhile()
        os.replace(part, path)
    except BaseException:
        if same_file(part, ours):
            os.unlink(part)
        raise
    return True


def is_empty_dir(path: str) -> bool:
    try:
        return not os.listdir(path)
    except OSError:
        return False


def remove_leftover(part: str) -> None:
    """A part file left by a killed agent, or still open in one whose laptop went away: that one keeps writing
    into the unlinked file, and its clean-up leaves ours alone."""
    if describe(part) is not None:
        os.unlink(part)


def write_part(fd: int, pieces, mode: int, mtime_ns: int) -> None:
    """Write and close fd; mode and mtime are set on the open file, so they land on this file and no other."""
    with open(fd, "wb") as f:
        for piece in pieces:
            f.write(piece)
        f.flush()
        os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))


def drain(inp, size: int) -> None:
    for _ in protocol.read_exactly(inp, size):
        pass
