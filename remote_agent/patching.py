"""Receiving a patch of a big file: the blocks that changed since the copy the host has (its digests are in
the file's sidecar, sidecars.py).

The blocks are received into `.NAME.offload-part` with everything needed to apply them (a redo journal,
journals.py), so nothing under the final name changes until the journal is whole. Then:
- no process has the file open or mapped: the journal is renamed to `.NAME.offload-patch` and the blocks are
  written in place;
- a process has it open (a job memory-maps train.bin): the file is copied, patched, and renamed over the old
  one, which the job keeps reading unchanged.
"""
from __future__ import annotations

import json
import os
import stat

from . import durable, protocol
from .bodies import Body
from .journals import commit_journal, redo, write_blocks
from .protocol import DIGEST_BYTES, PART_SUFFIX, beside, block_count, range_length
from .sidecars import read_sidecar, write_sidecar

COPY_SUFFIX = ".offload-copy" + PART_SUFFIX


class StalePatch(Exception):
    """The host file is not the one the laptop's patch was computed against."""


def patch_layout(message: dict, size: int) -> tuple:
    """(ranges, changed block count, bytes of block data) of a patch message, checked against its body's size."""
    file_size, ranges = int(message["file_size"]), [(int(first), int(count)) for first, count in message["ranges"]]
    blocks = block_count(file_size)
    if any(first < 0 or count < 1 or first + count > blocks for first, count in ranges):
        raise ValueError("block range past the end of the file")
    changed = sum(count for _, count in ranges)
    data = sum(range_length(first, count, file_size) for first, count in ranges)
    if changed * DIGEST_BYTES + data + 1 != size:
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
    body = Body(inp, message)  # raw in its blob, or compressed in frames (bodies.py)
    size = body.size
    try:
        part = write_journal(project_dir, relpath, path, message, body.read, size)
    finally:
        body.drain()
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


def write_journal(project_dir: str, relpath: str, path: str, message: dict, take, size: int | None = None) -> str | None:
    """Receive the patch (take(n) reads n bytes of its blob) into `.NAME.offload-part`: a header line, the new
    file's digests, the changed blocks; size: the patch's bytes (its message's `size` if None: a raw blob).
    Returns its path, or None when the laptop marked the patch incomplete."""
    try:
        ranges, changed, data = patch_layout(message, int(message["size"]) if size is None else size)
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
