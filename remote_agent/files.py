"""The host side of a sync: report what is there, write what arrives, delete what the laptop says.

Files are written under a temporary name in their final directory and renamed when complete, so a
file under its final name is always whole, and its bytes are durable before the rename (durable.py).
`.offload/synced.json` in the project records which paths syncs put there: only those are ever deleted,
so what runs wrote survives.
"""
from __future__ import annotations

import json
import os
import shutil
import stat

from . import durable, patching, protocol
from .patching import same_file

STATE_FILE = os.path.join(".offload", "synced.json")
PART_SUFFIX = ".offload-part"


class RequestError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def prepare(workdir: str, project: str) -> dict:
    """Create the project directory and prove it is writable before anything is sent."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    project_dir = os.path.join(workdir, project)
    os.makedirs(os.path.join(project_dir, ".offload"), exist_ok=True)
    probe = os.path.join(project_dir, ".offload", "write-probe")
    with open(probe, "wb") as f:
        f.write(b"ok")
    os.unlink(probe)
    return {"project_dir": project_dir, "free_bytes": shutil.disk_usage(project_dir).free}


def safe_path(project_dir: str, relpath: str) -> str:
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".offload":
        raise RequestError("bad_request", f"refusing path outside the project: {relpath!r}")
    return os.path.join(project_dir, *parts)


def describe(path: str) -> list | None:
    """[kind, size, mtime_ns, mode, target] of what is at path, or None."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # the latter: a file now stands where a parent dir was
        return None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ["link", 0, st.st_mtime_ns, mode, os.readlink(path)]
    if stat.S_ISDIR(st.st_mode):
        return ["dir", 0, st.st_mtime_ns, mode, ""]
    return ["file", st.st_size, st.st_mtime_ns, mode, ""]


def load_state(project_dir: str) -> set:
    try:
        with open(os.path.join(project_dir, STATE_FILE)) as f:
            return set(json.load(f)["synced"])
    except (FileNotFoundError, ValueError, KeyError):
        return set()


def save_state(project_dir: str, synced: set) -> None:
    path = os.path.join(project_dir, STATE_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    durable.write_json_durably(path, {"synced": sorted(synced)})


class Receiver:
    def __init__(self):
        self.expected = {}  # project_dir -> every path the laptop has (its apply, or manifest, request names them)

    def manifest(self, project_dir: str, paths: list | None = None) -> dict:
        """What is at the paths syncs put there (and at `paths`, when given): [kind, size, mtime_ns, mode, target]."""
        patching.recover(project_dir)  # a patch a killed agent left half-applied is finished first
        synced = load_state(project_dir)
        if paths is not None:
            self.expected[project_dir] = set(paths)
        present = {}
        for relpath in set(paths or ()) | synced:
            found = describe(safe_path(project_dir, relpath))
            if found is not None:
                present[relpath] = found
        return {"present": present, "synced": sorted(synced)}

    def blocks(self, project_dir: str, paths: list) -> tuple:
        """The stored block digests of those paths whose sidecar still matches the file (patching.py)."""
        for relpath in paths:
            safe_path(project_dir, relpath)
        return patching.stored_digests(project_dir, paths)

    def apply(self, request: dict, inp) -> dict:
        """Delete, then receive `put` messages until `end`. The state is saved even if the link drops.
        With record false (files put back for --resume), nothing is deleted and the state is left alone:
        those files are the run's, not the sync's."""
        project_dir = request["project_dir"]
        made_dirs.clear()  # a run or a person may have removed some since the last apply
        if "paths" in request:
            self.expected[project_dir] = set(request["paths"])
        if request.get("record", True) is False:
            tally = {"written": 0, "deleted": 0, "bytes": 0}
            failure = receive(project_dir, inp, set(), tally, None)
            if failure is not None:
                raise failure
            return tally
        synced = load_state(project_dir)
        synced.difference_update(request.get("forget", []))
        tally = {"written": 0, "deleted": 0, "bytes": 0}
        try:
            failure = None  # after a failure, keep reading so the stream stays in step; report it at the end
            still_there = with_parents(self.expected.get(project_dir, set()))
            for relpath in sorted(request.get("delete", []), reverse=True):  # children before parents
                try:
                    tally["deleted"] += remove(safe_path(project_dir, relpath))
                    patching.forget(project_dir, relpath)
                    remove_emptied_parents(project_dir, relpath, still_there)
                except (OSError, RequestError) as exc:
                    failure = failure or exc
                synced.discard(relpath)
            failure = receive(project_dir, inp, synced, tally, failure)
            if failure is not None:
                raise failure
            synced |= self.expected.get(project_dir, set())
        except BaseException:
            try:
                save_state(project_dir, synced)  # what was written is ours, even when the sync failed
            except OSError:
                pass  # on a full disk: the failure being raised says more than this one
            raise
        save_state(project_dir, synced)
        return tally


def receive(project_dir: str, inp, synced: set, tally: dict, failure: Exception | None) -> Exception | None:
    """Write `put` and `patch` entries until `end`; returns the first failure (later entries are read and
    dropped). A big file's `put` is followed by its block digests (`digests`), kept for later patches.
    inp is a protocol.Incoming. Written files wait in a durable.Batch and are renamed a batch at a time;
    an entry counts as written (and synced) once it stands under its final name."""
    batch = durable.Batch()
    try:
        failure = receive_entries(project_dir, inp, synced, tally, failure, batch)
    finally:
        batch.finish()  # on a dropped link too: what arrived whole is kept
    return failure or batch.failure


def receive_entries(project_dir: str, inp, synced: set, tally: dict, failure: Exception | None,
                    batch: durable.Batch) -> Exception | None:
    def written(relpath: str):
        def count() -> None:
            synced.add(relpath)
            tally["written"] += 1
        return count

    just_put = None
    while True:
        message = inp.next_message()
        if message["t"] == "end":
            return failure
        if message["t"] not in ("put", "patch", "digests"):
            raise RequestError("bad_request", f"unexpected {message['t']!r} during a sync")
        try:  # digests or a patch need their file under its final name; a second put of it, its part name
            if failure is None and batch.holds(safe_path(project_dir, message["path"])):
                batch.flush()
        except RequestError as exc:
            failure = exc
        failure = failure or batch.failure
        if failure is not None:
            drain(inp, int(message.get("size", 0)))
            continue
        try:
            if message["t"] == "digests":
                tally["bytes"] += patching.store_digests(project_dir, message, inp, just_put == message["path"])
                continue
            just_put = None
            if message["t"] == "patch":
                applied, received = patch(project_dir, message, inp)
                tally["bytes"] += received
                if applied:
                    written(message["path"])()
                # else the laptop's file changed while it was read: it sends it again
            else:
                received, committed = put(project_dir, message, inp, batch, written(message["path"]))
                tally["bytes"] += received
                if committed:  # else the laptop's file changed while it was read: it sends it again
                    just_put = message["path"]
        except (OSError, RequestError) as exc:
            failure = exc


def patch(project_dir: str, message: dict, inp) -> tuple:
    """Apply one patch (patching.py); its blob is always consumed from the stream."""
    try:
        path = safe_path(project_dir, message["path"])
    except RequestError:
        drain(inp, int(message.get("size", 0)))
        raise
    try:
        return patching.receive_patch(project_dir, message["path"], path, message, inp)
    except patching.StalePatch as exc:
        raise RequestError("stale", f"{exc}; sync again to send it whole") from None
    except OSError as exc:
        if exc.filename is None:
            exc.filename = message["path"]
        raise


def with_parents(paths: set) -> set:
    """The paths and every directory above them: "a/b/c" -> {"a/b/c", "a/b", "a"}."""
    found = set()
    for path in paths:
        parts = path.split("/")
        found.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return found


def remove_emptied_parents(project_dir: str, relpath: str, still_there: set) -> None:
    """A directory gone from the laptop left empty by deleting relpath goes too, as with rsync --delete;
    one the laptop still has, or one that holds anything else (a run's files), stays."""
    parts = relpath.split("/")[:-1]
    while parts and "/".join(parts) not in still_there:
        try:
            os.rmdir(safe_path(project_dir, "/".join(parts)))
        except OSError:  # not empty, or already gone
            return
        parts.pop()


def remove(path: str) -> int:
    found = describe(path)
    if found is None:
        return 0
    if found[0] == "dir":
        try:
            os.rmdir(path)  # only empty ones: a directory a run filled is the run's
        except OSError:
            return 0
    else:
        os.unlink(path)
    return 1


def put(project_dir: str, message: dict, inp, batch: durable.Batch, written) -> tuple:
    """Write one entry; (file bytes received, whether it is whole: under its final name, or in batch to be
    renamed there, when written() is called). A file's blob is
    its bytes and then one byte from the laptop: 1 if the file stayed the same while it was read, else 0 and
    the part file goes, leaving the host's older copy whole. The blob is always consumed from the stream."""
    blob = int(message.get("size", 0)) if message["kind"] == "file" else 0
    pieces = protocol.read_exactly(inp, max(blob - 1, 0))
    status = []

    def complete() -> bool:
        status.extend(b"".join(protocol.read_exactly(inp, 1)))
        return status == [1]

    try:
        committed = write_entry(safe_path(project_dir, message["path"]), message, pieces, complete, batch, written)
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


made_dirs = set()  # directories this agent created or found during the current apply


def write_entry(path: str, message: dict, pieces, complete, batch: durable.Batch, written) -> bool:
    """Put the entry at path, a file or link through batch; False when complete() says the file's bytes are
    not one version of it. written() is called once the entry stands under its final name."""
    kind, mode, mtime_ns = message["kind"], int(message["mode"]) & 0o7777, int(message["mtime_ns"])
    parent = os.path.dirname(path)
    if parent not in made_dirs:  # 100 files to a directory: one makedirs for them all
        durable.make_dirs(parent, batch.touched)
        made_dirs.add(parent)
    existing = describe(path)
    if kind == "dir":
        if existing is not None and existing[0] != "dir":
            os.unlink(path)
        durable.make_dirs(path, batch.touched)
        written()
        return True
    if existing is not None and existing[0] == "dir":
        try:
            os.rmdir(path)  # an empty directory, left where the laptop now has a file: nothing of a run's is lost
        except OSError:
            raise RequestError("bad_request",
                               f"{message['path']} is a directory on the host; remove it there first") from None
    part = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + PART_SUFFIX)
    fd = None
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

    def discard() -> None:
        if same_file(part, ours):
            os.unlink(part)

    def rename() -> None:  # by the batch, once the part's bytes are durable
        try:
            if not same_file(part, ours):
                raise RequestError("busy", f"another sync is writing {message['path']}; try again when it is done")
            os.replace(part, path)
        except BaseException:
            discard()
            raise
        written()

    try:
        if kind == "link":
            os.utime(part, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        else:
            size = write_part(fd, pieces, mode, mtime_ns)
            if not complete():
                os.close(fd)
                os.unlink(part)
                return False
    except BaseException:
        if fd is not None:
            os.close(fd)
        discard()
        raise
    batch.add(fd, path, size if fd is not None else 0, rename, discard)
    return True


def remove_leftover(part: str) -> None:
    """A part file left by a killed agent, or still open in one whose laptop went away: that one keeps writing
    into the unlinked file, and its clean-up leaves ours alone."""
    if describe(part) is not None:
        os.unlink(part)


def write_part(fd: int, pieces, mode: int, mtime_ns: int) -> int:
    """Write fd, left open for the batch to sync; its size. Mode and mtime are set on the open file, so they
    land on this file and no other."""
    with open(fd, "wb", closefd=False) as f:
        early = durable.EarlyWriteback(f)
        for piece in pieces:
            f.write(piece)
            early.wrote(len(piece))
        f.flush()
        os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    return early.written


def drain(inp, size: int) -> None:
    for _ in protocol.read_exactly(inp, size):
        pass
