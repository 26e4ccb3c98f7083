"""Block-level delta on the host: keep the laptop's block digests of big files, and apply patches to them.

The agent never hashes: after a whole big file arrives, the laptop sends the digests of its blocks and they
are kept in a sidecar, `.offload/blocks/<sha256 of the path>`, with the (size, mtime_ns, inode) the file had
once written. A sidecar that no longer matches the file (a run or a person changed it) is never used.

A patch carries the changed blocks. They are received into `.NAME.offload-part` with everything needed to
apply them (a redo journal), so nothing under the final name changes until the journal is whole. Then:
- no process has the file open or mapped: the journal is renamed to `.NAME.offload-patch` and the blocks are
  written in place. A journal left by a killed agent is applied again (writing the same bytes at the same
  offsets is idempotent) before the next manifest looks at the project; `.offload/patching/` names the
  journals in flight, so finding them costs one directory listing, not a walk of the project.
- a process has it open (a job memory-maps train.bin): the file is copied, patched, and renamed over the old
  one, which the job keeps reading unchanged.
Crash-safe against a killed agent or laptop, and against a power cut: the marker and the journal are durable
before any block is written in place, and the patched file before its new sidecar and its journal's removal
(durable.py). A journal or marker that is not whole (cut short, or unreadable) is an unfinished patch: it is
removed with the file's sidecar, the file is left as it is, and the laptop, finding no digests, sends it whole.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat

from . import durable, protocol
from .fence import OutsideProject
from .protocol import BLOCK, DIGEST_BYTES, PART_SUFFIX, beside, block_count, range_length

PATCH_SUFFIX = ".offload-patch"
COPY_SUFFIX = ".offload-copy" + PART_SUFFIX
BLOCKS_DIR = os.path.join(".offload", "blocks")
PATCHING_DIR = os.path.join(".offload", "patching")


class StalePatch(Exception):
    """The host file is not the one the laptop's patch was computed against."""


def path_key(relpath: str) -> str:
    return hashlib.sha256(relpath.encode()).hexdigest()[:32]


# --- sidecars ---------------------------------------------------------------------------------------------

def write_sidecar(project_dir: str, relpath: str, st: os.stat_result, digests: bytes) -> None:
    """One JSON header line, then the raw digests; written under a temporary name and renamed."""
    directory = os.path.join(project_dir, BLOCKS_DIR)
    os.makedirs(directory, exist_ok=True)
    header = {"path": relpath, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "block": BLOCK,
              "count": len(digests) // DIGEST_BYTES}
    durable.write_durably(os.path.join(directory, path_key(relpath)), json.dumps(header).encode() + b"\n" + digests)


def read_sidecar(project_dir: str, relpath: str, st: os.stat_result) -> bytes | None:
    """The stored digests, if they describe the file whose lstat is st exactly; else None."""
    try:
        with open(os.path.join(project_dir, BLOCKS_DIR, path_key(relpath)), "rb") as f:
            header = json.loads(f.readline())
            digests = f.read()
    except (OSError, ValueError):
        return None
    expected = {"path": relpath, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "block": BLOCK,
                "count": block_count(st.st_size)}
    if header != expected or len(digests) != expected["count"] * DIGEST_BYTES:
        return None
    return digests


def forget(project_dir: str, relpath: str, durably: bool = False) -> None:
    """Drop the file's sidecar; durably, when the file may not be what the sidecar describes (a patch left
    unfinished): a sidecar back after a power cut would let the next patch skip blocks that differ."""
    try:
        os.unlink(os.path.join(project_dir, BLOCKS_DIR, path_key(relpath)))
        if durably:
            durable.fsync_dir(os.path.join(project_dir, BLOCKS_DIR))
    except OSError:
        pass


def stored_digests(project_dir: str, located: list) -> tuple:
    """([[relpath, count], ...], the digests of those files, concatenated) for the (relpath, path) pairs with a
    valid sidecar."""
    found, blobs = [], []
    for relpath, path in located:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        digests = read_sidecar(project_dir, relpath, st) if stat.S_ISREG(st.st_mode) else None
        if digests is not None:
            found.append([relpath, len(digests) // DIGEST_BYTES])
            blobs.append(digests)
    return found, b"".join(blobs)


def store_digests(project_dir: str, message: dict, inp, just_put: bool, path: str) -> int:
    """The `digests` message after a whole big file (at path): kept if that file is the one just written."""
    size = int(message["size"])
    digests = b"".join(protocol.read_exactly(inp, size))
    relpath = message["path"]
    try:
        st = os.lstat(path)
    except OSError:
        return size
    if (just_put and stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (message["file_size"], message["mtime_ns"])
            and len(digests) == block_count(st.st_size) * DIGEST_BYTES):
        write_sidecar(project_dir, relpath, st, digests)
    return size


# --- receiving a patch ------------------------------------------------------------------------------------

def patch_layout(message: dict) -> tuple:
    """(ranges, changed block count, bytes of block data) of a patch message, checked against its blob size."""
    file_size, ranges = int(message["file_size"]), [(int(first), int(count)) for first, count in message["ranges"]]
    blocks = block_count(file_size)
    if any(first < 0 or count < 1 or first + count > blocks for first, count in ranges):
        raise ValueError("block range past the end of the file")
    changed = sum(count for _, count in ranges)
    data = sum(range_length(first, count, file_size) for first, count in ranges)
    if changed * DIGEST_BYTES + data + 1 != int(message["size"]):
        raise ValueError("blob size does not match the block ranges")
    return ranges, changed, data


def merged_digests(old: bytes, changed: bytes, ranges: list, blocks: int) -> bytes:
    """The new file's digests: the old ones, with the changed blocks' replaced (and the list cut or grown)."""
    new, taken, next_index = [], 0, 0
    for first, count in ranges + [(blocks, 0)]:
        if first > next_index and first * DIGEST_BYTES > len(old):
            raise StalePatch("an unchanged block lies past the end of the host's file")
        new.append(old[next_index * DIGEST_BYTES:first * DIGEST_BYTES])
        new.append(changed[taken:taken + count * DIGEST_BYTES])
        taken += count * DIGEST_BYTES
        next_index = first + count
    return b"".join(new)


def receive_patch(project_dir: str, relpath: str, path: str, message: dict, inp, in_place_ok: bool = True) -> tuple:
    """Receive a patch and apply it; returns (applied, bytes received). Not applied: the laptop saw its file
    change while sending and will send it again. The blob is always consumed from the stream.
    In place only when in_place_ok (no job of the project runs: the caller holds its tree), the file has one
    link (a staged tree's hard link must keep the old bytes) and no process has it open or mapped."""
    size = int(message["size"])
    consumed = [0]

    def take(count: int) -> bytes:
        consumed[0] += count
        return b"".join(protocol.read_exactly(inp, count))

    try:
        part = write_journal(project_dir, relpath, path, message, take)
    finally:
        for _ in protocol.read_exactly(inp, size - consumed[0]):
            pass
    if part is None:
        return False, size
    try:
        st = os.lstat(path)
        if not in_place_ok or st.st_nlink != 1 or in_use(st):
            apply_by_copy(project_dir, part, path)
        else:
            journal, marker = commit_journal(project_dir, relpath, part, path)
            applied = redo(project_dir, relpath, journal, path)
            os.unlink(marker)
            if not applied:
                raise StalePatch(f"the patch for {relpath} could not be applied whole")
    except BaseException:
        if os.path.lexists(part):
            os.unlink(part)
        raise
    return True, size


def write_journal(project_dir: str, relpath: str, path: str, message: dict, take) -> str | None:
    """Receive the patch (take(n) reads n bytes of its blob) into `.NAME.offload-part`: a header line, the new
    file's digests, the changed blocks. Returns its path, or None when the laptop marked the patch incomplete."""
    try:
        ranges, changed, data = patch_layout(message)
    except (KeyError, ValueError, TypeError) as exc:
        raise StalePatch(f"malformed patch: {exc}") from None
    st = os.lstat(path)
    old = read_sidecar(project_dir, relpath, st) if stat.S_ISREG(st.st_mode) else None
    if old is None:
        raise StalePatch(f"{relpath} changed on the host during the sync")
    file_size = int(message["file_size"])
    digests = merged_digests(old, take(changed * DIGEST_BYTES), ranges, block_count(file_size))
    header = {"path": relpath, "size": file_size, "mode": int(message["mode"]) & 0o7777,
              "mtime_ns": int(message["mtime_ns"]), "ranges": ranges, "dev": st.st_dev, "ino": st.st_ino,
              "count": len(digests) // DIGEST_BYTES}
    part = beside(path)
    if os.path.lexists(part):
        os.unlink(part)  # left by a killed agent
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    ours = os.fstat(fd)
    try:
        with open(fd, "wb") as f:
            f.write(json.dumps(header).encode() + b"\n" + digests)
            remaining = data
            while remaining:
                piece = take(min(remaining, protocol.CHUNK))
                f.write(piece)
                remaining -= len(piece)
            if take(1) != b"\1":  # the laptop's file changed while it was read: this patch is not one version
                f.close()
                os.unlink(part)
                return None
            f.flush()
            os.fsync(f.fileno())  # the journal is whole on disk before it is named one
        return part
    except BaseException:
        if same_file(part, ours):
            os.unlink(part)
        raise


def same_file(path: str, ours: os.stat_result) -> bool:
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return False
    return (found.st_dev, found.st_ino) == (ours.st_dev, ours.st_ino)


# --- applying a journal -----------------------------------------------------------------------------------

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


def apply_by_copy(project_dir: str, part: str, path: str) -> None:
    """For a file some process has open: patch a copy and rename it over the old one, which that process keeps."""
    copy = beside(path, COPY_SUFFIX)
    if os.path.lexists(copy):
        os.unlink(copy)
    with open(part, "rb") as f:
        header = json.loads(f.readline())
        digests = f.read(header["count"] * DIGEST_BYTES)
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        ours = os.fstat(fd)
        try:
            try:
                source = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    copy_bytes(source, fd, min(os.fstat(source).st_size, header["size"]))
                finally:
                    os.close(source)
                write_blocks(f, fd, header)
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            os.replace(copy, path)
            durable.fsync_dir(os.path.dirname(path))
        except BaseException:
            if same_file(copy, ours):
                os.unlink(copy)
            raise
    write_sidecar(project_dir, header["path"], st, digests)
    os.unlink(part)


def copy_bytes(source: int, target: int, size: int) -> None:
    """copy_file_range (a reflink or an in-kernel copy where the filesystem can), else read and write."""
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < size:
                done = os.copy_file_range(source, target, size - copied, copied, copied)
                if done == 0:
                    break
                copied += done
        except OSError:
            pass  # not supported between these files: the loop below carries on from where it stopped
    while copied < size:
        piece = os.pread(source, min(protocol.CHUNK, size - copied), copied)
        if not piece:
            break
        os.pwrite(target, piece, copied)
        copied += len(piece)


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


# --- who has a file open ----------------------------------------------------------------------------------

def in_use(st: os.stat_result) -> bool:
    """Whether any process has the file open or memory-mapped. Processes we may not look into are skipped;
    without /proc, every file counts as in use (the copy is always safe). Mappings are matched on the inode
    number alone: a false match on another device only costs a copy."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True
    inode = str(st.st_ino)
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                found = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (found.st_ino, found.st_dev) == (st.st_ino, st.st_dev):
                return True
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    fields = line.split(None, 5)
                    if len(fields) > 4 and fields[4] == inode:
                        return True
        except OSError:
            continue
    return False
