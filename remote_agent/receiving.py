"""One apply's writes and deletes into a sync's target (files.py): every path checked against what the sync
wrote there (records.py) before it is replaced or deleted, every file durable before its rename.

Received files (putting.py) wait in a batch.Batch, un-renamed, until one flush has made a batch of them
durable; then each is renamed, provided what stands under its final name is still the sync's to replace. An
entry counts as written (tally, records) once it stands under its final name.
"""
from __future__ import annotations

import os

from . import based, durable, patching, protocol, sidecars
from .batch import Batch
from .bundles import receive_bundle
from .fence import OutsideProject
from .protocol import CHANGED_ON_HOST, NOT_WRITTEN_BY_OFFLOAD, RequestError
from .putting import put
from .records import PENDING_FILE, identity, matches


class Receiving:
    """One apply's writes and deletes into a target, with the tally the laptop gets back."""

    def __init__(self, target, tally: dict, record: bool, force: bool):  # target: a files.Target
        self.target, self.tally, self.record, self.force = target, tally, record, force
        self.made_dirs = set()  # directories created or found during this apply
        self.new_dirs = set()  # those of them it created: nothing stands in them that this apply did not put

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
        sidecars.forget(self.target.project_dir, relpath)
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
        dropped). A big file's `put` is followed by its block digests (`digests`), kept for later patches.
        inp is a protocol.Incoming."""
        batch = Batch()
        if self.record:
            batch.intent_log = os.path.join(self.target.root, PENDING_FILE)  # records.adopt_pending reads it
        try:
            failure = self.receive_entries(inp, failure, batch)
        finally:
            batch.finish()  # on a dropped link too: what arrived whole is kept
        return failure or batch.failure

    def receive_entries(self, inp, failure: Exception | None, batch: Batch) -> Exception | None:
        just_put = None
        target = self.target
        while True:
            message = inp.next_message()
            if message["t"] == "end":
                return failure
            if message["t"] == "bundle":
                just_put = None
                failure = receive_bundle(self, inp, message, batch, failure)
                continue
            if message["t"] not in protocol.ENTRIES:
                raise RequestError("bad_request", f"unexpected {message['t']!r} during a sync")
            relpath = message.get("path")
            path, failure = self.place(relpath, batch, failure)
            if failure is not None or path is None:
                drain(inp, int(message.get("size", 0)))
                continue
            try:
                if message["t"] == "digests":
                    self.tally["bytes"] += sidecars.store_digests(target.project_dir, message, inp,
                                                                  just_put == relpath, path)
                    continue
                just_put = None
                current, replaceable = self.standing(relpath, path)
                if not replaceable:
                    drain(inp, int(message.get("size", 0)))
                    continue
                if message["t"] == "patch":
                    self.patch(relpath, path, message, inp, batch)
                else:
                    received, committed = put(path, message, inp, batch, self.make_dirs, current,
                                              self.commit_step(relpath, path), relpath)
                    self.tally["bytes"] += received
                    if committed:  # else the laptop's file changed while it was read: it sends it again
                        just_put = relpath
            except (OSError, RequestError) as exc:
                failure = exc

    def place(self, relpath, batch: Batch, failure: Exception | None) -> tuple:
        """(the absolute path of an entry, or None where it may not go; the apply's first failure). Digests or a
        patch need their file under its final name, and a second put of it its part name: a batch holding
        the path is committed first."""
        path = None
        try:
            path = self.target.path(relpath)
            if failure is None and batch.holds(path):
                batch.settle()
        except OutsideProject as exc:
            self.keep(relpath, str(exc))
        except RequestError as exc:
            failure = failure or exc
        return path, failure or batch.failure

    def patch(self, relpath: str, path: str, message: dict, inp, batch: Batch) -> None:
        """A patch of the file at path, or (with `base`) of another file on the host, built into a new part
        (based.py); one whose base would not do goes on the reply's `resend` list, to be sent whole."""
        if message.get("base") is None:
            applied, received = patch(self.target, relpath, path, message, inp)
            if applied:
                self.written(relpath, path)
        else:
            received, outcome = based.receive_based(self.target, relpath, path, message, inp, batch,
                                                    self.make_dirs, self.commit_step(relpath, path))
            if outcome == "resend":
                self.tally.setdefault("resend", []).append(relpath)  # only when any: the reply stays as it was
        self.tally["bytes"] += received  # not applied: the laptop's file changed while it was read; sent again

    def standing(self, relpath: str, path: str) -> tuple:
        """(what stands at path, records.identity; whether the sync may replace it). Where it may not, it is
        kept and the tally says why."""
        current = self.what_is_at(relpath, path)
        why = self.may_replace(relpath, current, path)
        if why is not None:
            self.keep(relpath, why)
        return current, why is None

    def what_is_at(self, relpath: str, path: str) -> list | None:
        """records.identity of path; without a syscall in a directory this apply created, where nothing
        stands but what it put there (each recorded as it lands; the rename still never replaces anything
        that appeared meanwhile, see commit_step)."""
        if self.record and path.rpartition("/")[0] in self.new_dirs and relpath not in self.target.records.paths:
            return None
        return identity(path)

    def make_dirs(self, path: str, touched: set) -> None:
        """A directory and its parents, once per apply (100 files to a directory: one makedirs for them all)."""
        if path not in self.made_dirs:
            self.new_dirs.update(durable.make_dirs(path, touched))
            self.made_dirs.add(path)

    def written(self, relpath: str, path: str, found: list | None = None) -> None:
        """relpath stands under its final name now (found: what it is, if known): the sync's, as it is."""
        if self.record:
            found = found or identity(path)
            if found is not None:
                self.target.records.paths[relpath] = found
        self.tally["written"] += 1

    def commit_step(self, relpath: str, path: str):
        """(move, written): move(part) renames the part over path unless what stands there now is not the
        sync's to replace (a job or a person may have written it meanwhile: it is kept, and move is False);
        written(found) records what landed."""
        record = self.target.records.paths.get(relpath)

        def move(part: str) -> bool:
            if self.force or not self.record:
                os.replace(part, path)
                return True
            if record is None and durable.rename_new(part, path):
                return True  # the common case, a new file: one atomic rename, never over what appeared meanwhile
            if self.target.records.owns(relpath, identity(path)):
                os.replace(part, path)
                return True
            self.keep(relpath, CHANGED_ON_HOST if relpath in self.target.records.paths else NOT_WRITTEN_BY_OFFLOAD)
            return False
        return move, lambda found=None: self.written(relpath, path, found)


def patch(target, relpath: str, path: str, message: dict, inp) -> tuple:
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


def remove_emptied_parents(target, relpath: str, still_there: set) -> None:
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


def is_empty_dir(path: str) -> bool:
    try:
        return not os.listdir(path)
    except OSError:
        return False



def drain(inp, size: int) -> None:
    for _ in protocol.read_exactly(inp, size):
        pass
