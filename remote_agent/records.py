"""What a sync wrote on the host, path by path: the proof that a host file is still offload's to replace.

`.offload/synced.json` records, for each path a sync put there, what it was right after it was written:
[kind, size, mtime_ns, inode, link target] (stored packed, see packed()). A sync overwrites or deletes a path only while it still
matches its record: a checkpoint a run rewrote, a file a person edited on the host, or a file offload never
wrote is somebody else's, and is kept. `generation` orders the trees that became live (see tree.py).
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import stat
import struct

from . import durable

STATE_FILE = os.path.join(".offload", "synced.json")
PENDING_FILE = os.path.join(".offload", "synced-pending.jsonl")  # what renames in flight will have written


def identity(path: str) -> list | None:
    """[kind, size, mtime_ns, inode, target] of what is at path (never following a last symlink), or None."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return identity_of(st, path)


def kind_of(st: os.stat_result) -> str:
    """What a sync calls what lstat found: "link", "dir", or "file" (anything else a sync never writes)."""
    if stat.S_ISLNK(st.st_mode):
        return "link"
    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def identity_of(st: os.stat_result, path: str) -> list:
    kind = kind_of(st)
    if kind == "link":
        return ["link", 0, st.st_mtime_ns, st.st_ino, os.readlink(path)]
    if kind == "dir":
        return ["dir", 0, 0, 0, ""]
    return ["file", st.st_size, st.st_mtime_ns, st.st_ino, ""]


def matches(record: list | None, current: list | None) -> bool:
    """Whether the thing at a path is still the one a sync wrote there."""
    if record is None or current is None or record[0] != current[0]:
        return False
    if current[0] == "dir":
        return True
    if current[0] == "link":
        return record[4] == current[4]
    return record[1:4] == current[1:4]


class Records:
    def __init__(self, paths: dict, generation: int = 0):
        self.paths = paths  # relpath -> identity when written
        self.generation = generation

    @staticmethod
    def exist(root: str) -> bool:
        return os.path.isfile(os.path.join(root, STATE_FILE))

    @classmethod
    def load(cls, root: str, resolve=None) -> "Records":
        """The records of the tree at root. A file of the first format (a bare list of paths) is taken as
        describing the files there now: it predates records, and those paths were the sync's. An agent kept
        between syncs (the laptop's link keeper) reads a file it saved itself only once."""
        key = file_key(os.path.join(root, STATE_FILE))
        cached = LOADED.get(root)
        if cached is not None and key is not None and cached[0] == key and not os.path.lexists(
                os.path.join(root, PENDING_FILE)):
            return cached[1]
        records = cls.read(root, resolve)
        if key is not None:
            LOADED[root] = (key, records)
        return records

    @classmethod
    def read(cls, root: str, resolve=None) -> "Records":
        try:
            with open(os.path.join(root, STATE_FILE)) as f:
                data = json.load(f)
        except (FileNotFoundError, ValueError):
            return cls({})
        if not isinstance(data, dict):
            return cls({})
        if isinstance(data.get("paths"), list):
            try:
                records = cls(unpacked(data), int(data.get("generation", 0)))
            except (KeyError, TypeError, ValueError, struct.error, binascii.Error):
                records = cls({})  # unreadable: nothing is taken as the sync's, so nothing is replaced unasked
            records.adopt_pending(root, resolve or (lambda relpath: os.path.join(root, *relpath.split("/"))))
            return records
        resolve = resolve or (lambda relpath: os.path.join(root, *relpath.split("/")))
        migrated = {}
        for path in data.get("synced", []):
            try:
                found = identity(resolve(path))
            except Exception:  # noqa: BLE001 - a path the fence refuses is simply not ours any more
                found = None
            if found is not None:
                migrated[path] = found
        return cls(migrated)

    def adopt_pending(self, root: str, resolve) -> None:
        """A sync killed between its renames and saving its records left what it meant to write in the
        pending file (one JSON line a batch): each path that is now exactly that is the sync's."""
        try:
            with open(os.path.join(root, PENDING_FILE), "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines:
            try:
                batch = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill: its renames never began (it is synced before them)
            for relpath, intended in (batch.items() if isinstance(batch, dict) else ()):
                try:
                    found = identity(resolve(relpath))
                except Exception:  # noqa: BLE001 - behind a link out of the project now: not the sync's
                    continue
                if found is not None and isinstance(intended, list) and matches(intended, found):
                    self.paths[relpath] = found

    def save(self, root: str) -> None:
        """Durably; then the pending file goes: until the records are safe, it is their backup."""
        os.makedirs(os.path.join(root, os.path.dirname(STATE_FILE)), exist_ok=True)
        LOADED.pop(root, None)
        durable.write_durably(os.path.join(root, STATE_FILE), json.dumps(
            {"version": 3, "generation": self.generation, **packed(self.paths)}, separators=(",", ":")).encode())
        key = file_key(os.path.join(root, STATE_FILE))
        if key is not None:
            LOADED[root] = (key, self)
        try:
            os.unlink(os.path.join(root, PENDING_FILE))
        except FileNotFoundError:
            pass

    def owns(self, relpath: str, current: list | None) -> bool:
        """Whether a sync may replace or delete what is at relpath now: nothing there, or what it wrote."""
        return current is None or matches(self.paths.get(relpath), current)


LOADED = {}  # root -> (file_key of its synced.json, the Records read from or saved to it)
KIND_LETTERS = {"file": "f", "dir": "d", "link": "l"}
LETTER_KINDS = {letter: kind for kind, letter in KIND_LETTERS.items()}
STATS = struct.Struct("<QqQ")  # size, mtime_ns, inode of each record, packed: 10,000 records read in ms


def packed(paths: dict) -> dict:
    """The records as JSON fields: their paths, one kind letter each, their numbers packed (base64), and
    link targets. A JSON list a record would take ten times as long to read on every sync."""
    numbers = b"".join(STATS.pack(record[1], record[2], record[3]) for record in paths.values())
    return {"paths": list(paths), "kinds": "".join(KIND_LETTERS[record[0]] for record in paths.values()),
            "stats": base64.b64encode(numbers).decode(),
            "targets": {path: record[4] for path, record in paths.items() if record[0] == "link"}}


def unpacked(data: dict) -> dict:
    paths, kinds, targets = data["paths"], data["kinds"], data.get("targets") or {}
    numbers = list(STATS.iter_unpack(base64.b64decode(data["stats"])))
    if not (len(paths) == len(kinds) == len(numbers)):
        raise ValueError("records of different lengths")
    return {path: [LETTER_KINDS[kind], size, mtime_ns, inode, targets.get(path, "")]
            for path, kind, (size, mtime_ns, inode) in zip(paths, kinds, numbers)}


def file_key(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
