"""Small files travel many to a message: a `bundle` of up to BUNDLE_BYTES, one header for all, one body.

A tree of 100,000 small files sent one `put` each paid a JSON header, a body and a status byte a file on both
ends. A bundled file is read whole before it is sent (it is small), so whether it stayed one version while it
was read is known before its bytes go: one that did not is left out of the bundle and sent again the usual way
(send.py), never written on the host. What the host does with each file is what it does with a `put`
(remote_agent/bundles.py): the same checks, the same durable rename.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from remote_agent import protocol

from offload.sync.frames import open_body
from offload.sync.scan import LocalEntry

BUNDLE_FILE_MAX = 128 << 10  # files up to this size go in bundles; bigger ones are worth a message of their own
BUNDLE_BYTES = protocol.CHUNK  # a bundle's body: one frame, so a bundle of source files compresses as one
BUNDLE_FILES = 1024  # and its header stays small


def bundled(entry: LocalEntry) -> bool:
    return entry.kind == "file" and entry.size <= BUNDLE_FILE_MAX


def read_whole(path: Path, entry: LocalEntry) -> tuple | str | None:
    """(bytes, mtime_ns) of a small file, read in one go and as the scan saw it (entry) until after it was
    read; None if it is gone (the next sync deletes it on the host too); "changed" if it changed since the
    scan or while it was read (grown past a bundle's files, turned into a FIFO). Four system calls a file:
    this is most of the laptop's cost of a first sync of many small files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO put there never blocks us
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, entry.size + 1)  # one byte past the size: a file grown since the scan says so
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(after.st_mode) or (len(data), after.st_size, after.st_mtime_ns) != (
            entry.size, entry.size, entry.mtime_ns):
        return "changed"
    return data, entry.mtime_ns


class Bundler:
    """Gathers small files into bundles and sends each when full (and the last at flush)."""

    def __init__(self, agent, project_root: Path, advance, compression):
        self.agent, self.root, self.advance, self.compression = agent, project_root, advance, compression
        self.entries, self.pieces, self.size = [], [], 0
        self.changed = []  # entries that changed while they were read: the caller sends them again

    def add(self, entry: LocalEntry) -> None:
        found = read_whole(self.root / entry.path, entry)
        if found is None:
            return
        if found == "changed":
            self.changed.append(entry)
            return
        data, mtime_ns = found
        if self.size + len(data) > BUNDLE_BYTES or len(self.entries) >= BUNDLE_FILES:
            self.flush()
        self.entries.append([entry.path, entry.mode, mtime_ns, len(data)])
        self.pieces.append(data)
        self.size += len(data)

    def flush(self) -> None:
        if not self.entries:
            return
        body = open_body(self.agent, self.size, self.compression)
        self.agent.write(protocol.encode("bundle", files=self.entries, **body.fields))
        body.write(b"".join(self.pieces))
        body.close()
        self.advance(self.size)
        self.entries, self.pieces, self.size = [], [], 0
