"""One `put` of a sync: a file, a link or a directory written beside its final name, for a batch to rename.

A file's blob is its bytes and then one byte from the laptop: 1 if the file stayed the same while it was read,
else 0, and the part file goes, leaving the host's older copy whole. A file or link is written as
`.NAME.offload-part` and waits in a batch.Batch until its bytes are durable; the rename itself is the
caller's (receiving.py), which first checks that what stands under the final name is still the sync's.
"""
from __future__ import annotations

import os

from . import durable, protocol
from .batch import Batch
from .bodies import Body
from .patching import same_file
from .protocol import PART_SUFFIX, RequestError
from .records import identity

PART_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def put(path: str, message: dict, inp, batch: Batch, make_dirs, existing: list | None, commit_step,
        relpath: str) -> tuple:
    """Write one entry; (file bytes received, whether it is whole: under its final name, or in batch to be
    renamed there). Its bytes, raw or compressed (bodies.py), are always consumed from the stream."""
    body = Body(inp, message) if message["kind"] == "file" else None
    blob = body.size if body is not None else 0
    pieces = body.pieces(max(blob - 1, 0)) if body is not None else iter(())

    def complete() -> bool:
        status = body.read(1)
        if status == b"":
            raise protocol.ProtocolError("stream ended 1 bytes before the end of a blob")
        return status == b"\x01"

    try:
        committed = write_entry(path, message, pieces, complete, batch, make_dirs, existing, commit_step, relpath)
    except OSError as exc:
        if exc.filename is None:  # a failed write or close names no file: say which one it was
            exc.filename = message["path"]
        raise
    finally:
        if body is not None:
            body.drain()  # what the write did not consume: the rest of the bytes and the status byte
    return max(blob - 1, 0), committed


def write_entry(path: str, message: dict, pieces, complete, batch: Batch, make_dirs, existing: list | None,
                commit_step, relpath: str) -> bool:
    """Put the entry at path (where `existing` is, records.identity), a file or link through batch; False
    when complete() says the file's bytes are not one version of it. make_dirs(path, touched) makes a directory
    and its parents; commit_step: (move(part), written()), the rename itself, and what is told once the entry
    stands under its final name."""
    move, written = commit_step
    kind, mode, mtime_ns = message["kind"], int(message["mode"]) & 0o7777, int(message["mtime_ns"])
    make_dirs(path.rpartition("/")[0], batch.touched)  # an absolute path from the fence: string work, 10,000 a sync
    if kind == "dir":
        if existing is not None and existing[0] != "dir":
            os.unlink(path)
        make_dirs(path, batch.touched)
        written()
        return True
    if existing is not None and existing[0] == "dir":
        try:
            os.rmdir(path)  # an empty directory, left where the laptop now has a file: nothing of a run's is lost
        except OSError:
            raise RequestError("bad_request",
                               f"{message['path']} is a directory on the host; remove it there first") from None
    part = Part(path)
    if kind == "link":
        part.make_link(message["target"])
    else:
        part.open_file()
    size = 0
    try:
        if kind == "link":
            os.utime(part.path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        else:
            size = write_part(part.fd, pieces, mode, mtime_ns, int(message.get("raw_size") or message.get("size", 0)))
            if not complete():
                os.close(part.fd)
                os.unlink(part.path)
                return False
    except BaseException:
        if part.fd is not None:
            os.close(part.fd)
        part.discard()
        raise
    intended = identity(part.path) if kind == "link" else ["file", size, mtime_ns, part.ours.st_ino, ""]
    batch.add(part.fd, path, size, part.renamer(move, lambda: written(intended)), part.discard,
              intent=(relpath, intended), device=part.ours.st_dev)
    return True


class Part:
    """An entry's `.NAME.offload-part`: a new symlink, or a new file open as fd. `ours` is what it was made as,
    so that removing it never removes what another agent put there since."""

    def __init__(self, path: str):
        parent, _, name = path.rpartition("/")
        self.path, self.fd, self.ours = f"{parent}/.{name}{PART_SUFFIX}", None, None

    def make_link(self, target: str) -> None:
        remove_leftover(self.path)
        os.symlink(target, self.path)
        self.ours = os.lstat(self.path)

    def open_file(self, flags: int = PART_FLAGS) -> None:
        try:
            self.fd = os.open(self.path, flags, 0o600)
        except FileExistsError:
            remove_leftover(self.path)
            self.fd = os.open(self.path, flags, 0o600)
        self.ours = os.fstat(self.fd)

    def discard(self) -> None:
        if same_file(self.path, self.ours):
            os.unlink(self.path)

    def renamer(self, move, landed):
        """rename() for the batch, once the part's bytes are durable (no other sync writes its parts: the
        project's sync lock, tree.py): move(part) renames it, or says False and the part goes; landed() then."""
        def rename() -> None:
            try:
                if not move(self.path):
                    self.discard()
                    return
            except BaseException:
                self.discard()
                raise
            landed()  # a rename keeps the inode and times: the path is now what the part was
        return rename


def remove_leftover(part: str) -> None:
    """A part file left by a killed agent, or still open in one whose laptop went away: that one keeps writing
    into the unlinked file, and its clean-up leaves ours alone."""
    if os.path.lexists(part):
        os.unlink(part)


def write_part(fd: int, pieces, mode: int, mtime_ns: int, expected: int) -> int:
    """Write fd, left open for the batch to sync; its size. Straight os.write of each received piece (no
    buffer object a file: 10,000 small files a sync). Mode and mtime are set on the open file, so they land
    on this file and no other. A file of `expected` bytes or more hands its bytes to the disk as they come."""
    early = durable.EarlyWriteback(fd) if expected > durable.WRITEBACK_BYTES else None
    written = 0
    for piece in pieces:
        done = os.write(fd, piece)
        while done < len(piece):  # a short write (a signal, a full disk's last blocks): the rest
            done += os.write(fd, memoryview(piece)[done:])
        written += done
        if early is not None:
            early.wrote(done)
    os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime_ns, mtime_ns))
    return written
