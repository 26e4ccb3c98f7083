"""A patch whose base is another file on the host (content_index.py found it): a new or renamed path built
from a copy the host already has, and only the blocks that differ from it received.

The base is copied into the new path's `.NAME.offload-part` (a reflink where the filesystem can, patching.
copy_bytes), the received blocks are written over it, and the result must hash to the SHA-256 the laptop sent
before it goes into the batch to be renamed, like any put (putting.py): nothing under a final name is ever
built from a base that was not what its sidecar said. A base that changed (during the copy, or behind
offload's back with its size and mtime restored) leaves nothing behind but its dropped sidecar, and the path
goes on the `resend` list of the apply's reply: the laptop sends it whole.
"""
from __future__ import annotations

import hashlib
import os

from . import protocol, sidecars
from .bodies import Body
from .content_index import base_file
from .fence import OutsideProject
from .patching import StalePatch, copy_bytes, merged_digests, patch_layout
from .protocol import BLOCK, DIGEST_BYTES, RequestError, block_count, range_length
from .putting import Part


class BaseGone(Exception):
    """The base is not (or no longer) the file its sidecar describes."""


def receive_based(target, relpath: str, path: str, message: dict, inp, batch, make_dirs, commit_step) -> tuple:
    """(bytes received, outcome): "put" (in the batch, to be renamed), "changed" (the laptop's file changed
    while it was read: it sends it again), or "resend" (the base would not do: the laptop sends it whole).
    The blob is always consumed from the stream."""
    pieces = Body(inp, message)  # raw in its blob, or compressed in frames (bodies.py)
    size = pieces.size
    try:
        try:
            ranges, changed, _ = patch_layout(message, size)
        except (KeyError, ValueError, TypeError) as exc:
            raise RequestError("bad_request", f"malformed patch: {exc}") from None
        try:
            outcome = build(target, relpath, path, message, ranges, pieces.read(changed * DIGEST_BYTES), pieces,
                            batch, make_dirs, commit_step)
        except BaseGone:
            outcome = "resend"
    finally:
        pieces.drain()
    return size, outcome


def build(target, relpath: str, path: str, message: dict, ranges: list, changed: bytes, pieces: Body, batch,
          make_dirs, commit_step) -> str:
    workdir = os.path.dirname(target.project_dir)
    try:
        base_dir, base_rel = message["base"]
        base_project, base_path = base_file(workdir, base_dir, base_rel)
        base = os.open(base_path, os.O_RDONLY | os.O_NOFOLLOW)
    except (OSError, OutsideProject, ValueError, TypeError):
        raise BaseGone() from None
    try:
        st = os.fstat(base)
        old = sidecars.read_sidecar(base_project, base_rel, st)
        if old is None:
            raise BaseGone()
        file_size = int(message["file_size"])
        try:
            digests = merged_digests(old, changed, ranges, block_count(file_size))
        except StalePatch:  # the base is shorter than the blocks the laptop did not send
            raise BaseGone() from None
        make_dirs(path.rpartition("/")[0], batch.touched)
        part = Part(path)
        part.open_file(os.O_RDWR | os.O_CREAT | os.O_EXCL)  # read back: the result is hashed before it is kept
        try:
            outcome = write_part(part.fd, base, st, ranges, file_size, pieces, message)
            if outcome == "resend":
                sidecars.forget(base_project, base_rel, durably=True)  # wrong content: never a base again
            if outcome != "put" or not unchanged(base_path, st):
                os.close(part.fd)
                part.discard()
                return outcome if outcome != "put" else "resend"
        except BaseException:
            os.close(part.fd)
            part.discard()
            raise
    finally:
        os.close(base)
    move, written = commit_step
    intended = ["file", file_size, int(message["mtime_ns"]), part.ours.st_ino, ""]
    sidecars.write_sidecar(target.project_dir, relpath, os.fstat(part.fd), digests)
    batch.add(part.fd, path, file_size, part.renamer(move, lambda: written(intended)), part.discard,
              intent=(relpath, intended), device=part.ours.st_dev)
    return "put"


def write_part(fd: int, base: int, st: os.stat_result, ranges: list, file_size: int, pieces: Body,
               message: dict) -> str:
    """The base's bytes, the received blocks over them, the laptop's size, mode and mtime; "put" when the
    result hashes to the laptop's SHA-256, "changed" when the laptop's status byte says its file changed,
    "resend" when the hash differs (the base was not what its sidecar said)."""
    copy_bytes(base, fd, min(st.st_size, file_size))
    for first, count in ranges:
        offset, remaining = first * BLOCK, range_length(first, count, file_size)
        while remaining:
            piece = pieces.read(min(remaining, protocol.CHUNK))
            os.pwrite(fd, piece, offset)
            offset += len(piece)
            remaining -= len(piece)
    os.ftruncate(fd, file_size)
    if pieces.read(1) != b"\1":
        return "changed"
    if file_sha256(fd, file_size) != message.get("sha256"):
        return "resend"
    os.fchmod(fd, int(message["mode"]) & 0o7777)
    os.utime(fd, ns=(int(message["mtime_ns"]), int(message["mtime_ns"])))
    return "put"


def unchanged(base_path: str, st: os.stat_result) -> bool:
    """Whether the base is still the file it was when the copy began (one changed while copied is never used)."""
    try:
        now = os.lstat(base_path)
    except OSError:
        return False
    return (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)


def file_sha256(fd: int, size: int) -> str:
    digest, offset = hashlib.sha256(), 0
    while offset < size:
        piece = os.pread(fd, min(protocol.CHUNK, size - offset), offset)
        if not piece:
            break
        digest.update(piece)
        offset += len(piece)
    return digest.hexdigest()
