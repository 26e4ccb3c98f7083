"""A patch's redo journal, applied in place, and the journals a killed agent left in flight.

A journal, `.NAME.offload-patch`, holds everything needed to patch NAME: a header line, the new file's block
digests, the changed blocks (patching.py receives it). `.offload/patching/` names the journals in flight, so
finding them costs one directory listing, not a walk of the project. A journal left by a killed agent is
applied again (writing the same bytes at the same offsets is idempotent) before the next sync or job looks at
the project. The marker and the journal are durable before any block is written in place, and the patched
file before its new sidecar and its journal's removal (durable.py), so a power cut is survived too. A journal
or marker that is not whole (cut short, or unreadable) is an unfinished patch: it is removed with the file's
sidecar, the file is left as it is, and the laptop, finding no digests, sends it whole.
"""
from __future__ import annotations

import json
import os

from . import durable, protocol
from .fence import Fence, OutsideProject
from .protocol import BLOCK, DIGEST_BYTES, beside, block_count, range_length
from .records import Records, identity
from .sidecars import forget, path_key, write_sidecar

PATCH_SUFFIX = ".offload-patch"
PATCHING_DIR = os.path.join(".offload", "patching")


def commit_journal(project_dir: str, relpath: str, part: str, path: str) -> tuple:
    """Name the journal in `.offload/patching/`, then make the whole part file the journal; (journal, marker)."""
    journal = beside(path, PATCH_SUFFIX)
    marker_dir = os.path.join(project_dir, PATCHING_DIR)
    os.makedirs(marker_dir, exist_ok=True)
    marker = os.path.join(marker_dir, path_key(relpath))
    durable.write_durably(marker, relpath.encode())  # before the journal: a journal no marker names is never found
    os.replace(part, journal)  # from here on the patch is complete: redone after a crash
    durable.fsync_dir(os.path.dirname(journal))  # and before any block is written in place
    return journal, marker


def redo(project_dir: str, relpath: str, journal: str, path: str) -> bool:
    """Apply a complete journal to the file at path in place (again, after a crash: same bytes, same result);
    whether it patched the file. A journal that is not whole is not applied at all: it goes, with the file's
    sidecar. Nor is one whose file is gone or was replaced since."""
    with open(journal, "rb") as f:
        header = whole_journal(f, relpath)
        if header is None:
            f.close()
            abandon(project_dir, relpath, journal)
            return False
        digests = f.read(header["count"] * DIGEST_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            fd = None  # the file is gone: nothing left to patch
        if fd is not None:
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == (header["dev"], header["ino"]):
                    write_blocks(f, fd, header)
                    os.fsync(fd)  # the new blocks are on disk before the sidecar says so, and the journal goes
                    st = os.fstat(fd)
                else:
                    st = None  # replaced since: the journal was meant for a file that is no longer there
            finally:
                os.close(fd)
            if st is not None:
                write_sidecar(project_dir, header["path"], st, digests)
    os.unlink(journal)
    return fd is not None and st is not None


def whole_journal(f, relpath: str) -> dict | None:
    """The header of the journal open as f, if the journal is whole: a readable header for relpath, and
    exactly the bytes that header promises after it. None for anything else (cut short, garbage)."""
    try:
        line = f.readline(protocol.MAX_LINE)
        header = json.loads(line)
        size, count = int(header["size"]), int(header["count"])
        ranges = [(int(first), int(length)) for first, length in header["ranges"]]
        int(header["mode"]), int(header["mtime_ns"]), int(header["dev"]), int(header["ino"])  # numbers, all
        if header["path"] != relpath or count < 0 or size < 0:
            return None
        blocks = block_count(size)
        if any(first < 0 or length < 1 or first + length > blocks for first, length in ranges):
            return None
        data = sum(range_length(first, length, size) for first, length in ranges)
    except (ValueError, KeyError, TypeError):  # TypeError: a header that is a list, a number where a list goes
        return None
    if os.fstat(f.fileno()).st_size != len(line) + count * DIGEST_BYTES + data:
        return None
    return header


def abandon(project_dir: str, relpath: str, journal: str) -> None:
    """An unfinished patch: the journal goes, and the sidecar with it, so the file is sent whole next time."""
    forget(project_dir, relpath, durably=True)
    try:
        os.unlink(journal)
    except OSError:
        pass  # not a file we wrote (a directory stands there): it stays; its marker goes, so it is never redone


def write_blocks(journal, fd: int, header: dict) -> None:
    """The journal's blocks at their offsets, then size, mode and mtime: the file ends as the laptop's."""
    size = header["size"]
    for first, count in header["ranges"]:
        offset, remaining = first * BLOCK, range_length(first, count, size)
        while remaining:
            piece = journal.read(min(remaining, protocol.CHUNK))
            if not piece:
                raise OSError("journal shorter than its header says")
            os.pwrite(fd, piece, offset)
            offset += len(piece)
            remaining -= len(piece)
    os.ftruncate(fd, size)
    os.fchmod(fd, header["mode"])
    os.utime(fd, ns=(header["mtime_ns"], header["mtime_ns"]))


def recover(project_dir: str, fence) -> list:
    """Redo the journals a killed agent left in flight (`.offload/patching/` names them); fence resolves
    their paths inside the project (fence.py). Returns the paths patched, whose records are now stale."""
    marker_dir = os.path.join(project_dir, PATCHING_DIR)
    try:
        markers = os.listdir(marker_dir)
    except FileNotFoundError:
        return []
    redone = []
    for name in markers:
        marker = os.path.join(marker_dir, name)
        try:
            relpath = marked_path(marker, name)
            if relpath is not None and redo_marked(project_dir, relpath, fence):
                redone.append(relpath)
            os.unlink(marker)
        except FileNotFoundError:
            continue  # another agent finished it
        except OutsideProject:
            os.unlink(marker)  # its file now lies behind a link out of the project: never patched there
    return redone


def redo_marked(project_dir: str, relpath: str, fence) -> bool:
    """Redo relpath's journal, if it got as far as having one; whether its file was patched. One that cannot
    be read, or whose file cannot be written, is abandoned as one cut short is: the file is sent whole next
    time."""
    path = fence.path(relpath)
    journal = beside(path, PATCH_SUFFIX)
    if not os.path.lexists(journal):
        return False
    try:
        return redo(project_dir, relpath, journal, path)
    except FileNotFoundError:
        raise  # another agent finished it: recover() moves on
    except OSError:
        abandon(project_dir, relpath, journal)
        return False


def marked_path(marker: str, name: str) -> str | None:
    """The project path a marker names; None for a marker cut short or garbled (its journal, if any, was
    never renamed into place: the marker is made durable first)."""
    with open(marker, "rb") as f:
        content = f.read(protocol.MAX_LINE)
    try:
        relpath = content.decode()
    except UnicodeDecodeError:
        return None
    parts = relpath.split("/")
    if path_key(relpath) != name or any(part in ("", ".", "..") for part in parts):
        return None
    return relpath


def finish_patches(project_dir: str) -> Records:
    """Redo the patches a killed agent left half-applied, and record the files they finished: a patch is only
    ever applied to a file the sync owned, so the result is the sync's too. The caller holds the project's
    tree, so no job reads those files meanwhile. Returns the live records."""
    fence = Fence(project_dir)
    redone = recover(project_dir, fence)
    records = Records.load(project_dir, resolve=fence.path)
    if redone:
        for relpath in redone:
            found = identity(fence.path(relpath))
            if found is not None and relpath in records.paths:
                records.paths[relpath] = found
        records.save(project_dir)
    return records
