"""Block digests on the laptop: which blocks of a big file differ from the copy the host already has.

The host never hashes (its agent is standard library only): it keeps, next to each big file it received,
the digests the laptop computed, and hands them back when that file changed here. xxh3_128 hashes a GiB from
the page cache in about 0.2 s, so hashing the whole file again costs less than rewriting it on the host.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import xxhash

from remote_agent.protocol import BLOCK, DIGEST_BYTES, block_count, range_length

DELTA_MIN_BYTES = 8 << 20  # smaller files are sent whole: a round trip and a hash would cost more than they save
DELTA_MAX_FRACTION = 0.5  # past this share of changed blocks a whole-file put writes less on the host


def block_length(index: int, size: int) -> int:
    return range_length(index, 1, size)


class BlockHasher:
    """Feed a file's bytes in order, in pieces of any size; `digests()` is one digest per BLOCK, concatenated."""

    def __init__(self):
        self.pending = bytearray()
        self.found = []

    def update(self, piece: bytes) -> None:
        view = memoryview(piece)
        if self.pending:
            take = min(BLOCK - len(self.pending), len(view))
            self.pending += view[:take]
            view = view[take:]
            if len(self.pending) < BLOCK:
                return
            self.found.append(xxhash.xxh3_128_digest(self.pending))
            self.pending = bytearray()
        whole = len(view) - len(view) % BLOCK
        for start in range(0, whole, BLOCK):
            self.found.append(xxhash.xxh3_128_digest(view[start:start + BLOCK]))
        self.pending += view[whole:]

    def digests(self) -> bytes:
        if self.pending:
            self.found.append(xxhash.xxh3_128_digest(self.pending))
            self.pending = bytearray()
        return b"".join(self.found)


def hash_file(f, size: int, chunk: int = 8 << 20) -> bytes | None:
    """Digests of the first `size` bytes of open file f, or None if it is shorter now."""
    hasher = BlockHasher()
    buffer = memoryview(bytearray(chunk))  # one buffer for the whole file: no allocation per read
    f.seek(0)
    remaining = size
    while remaining:
        got = f.readinto(buffer[:min(remaining, chunk)])
        if not got:
            return None
        hasher.update(buffer[:got])
        remaining -= got
    return hasher.digests()


def changed_blocks(old: bytes, new: bytes) -> list:
    """Pure: indexes of the blocks of the new file whose digest differs from the old file's (or that it lacks)."""
    old_count = len(old) // DIGEST_BYTES
    changed = []
    for index in range(len(new) // DIGEST_BYTES):
        start = index * DIGEST_BYTES
        if index >= old_count or old[start:start + DIGEST_BYTES] != new[start:start + DIGEST_BYTES]:
            changed.append(index)
    return changed


def as_ranges(indexes: list) -> list:
    """[3, 4, 5, 9] -> [[3, 3], [9, 1]]: first block and count of each run."""
    ranges = []
    for index in indexes:
        if ranges and ranges[-1][0] + ranges[-1][1] == index:
            ranges[-1][1] += 1
        else:
            ranges.append([index, 1])
    return ranges


@dataclass
class Delta:
    """What a patch of one file sends: the changed blocks of the file as it was when hashed."""
    size: int  # the local file's size when hashed
    mtime_ns: int
    digests: bytes  # every block's digest, local file
    changed: list  # block indexes
    stable: bool = True  # False: the file changed while it was hashed; nothing is sent, it is hashed again
    base: list | None = None  # [project dir, path] of another file on the host the patch applies to (bases.py)
    sha256: str | None = None  # with a base: the whole local file's, which the host checks the result against

    @property
    def blocks(self) -> int:
        return block_count(self.size)

    @property
    def data_bytes(self) -> int:
        return sum(block_length(index, self.size) for index in self.changed)

    @property
    def wire_bytes(self) -> int:
        """The blob after the patch message: changed digests, changed blocks, one status byte."""
        return len(self.changed) * DIGEST_BYTES + self.data_bytes + 1


def hash_stable(path) -> tuple | None:
    """(size, mtime_ns, block digests) of the file at path, the digests None when it changed while it was
    hashed; None when it cannot be opened (gone)."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    with f:
        before = os.fstat(f.fileno())
        digests = hash_file(f, before.st_size)
        after = os.fstat(f.fileno())
    stable = digests is not None and (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return before.st_size, before.st_mtime_ns, digests if stable else None


def plan_delta(path, host_digests: bytes) -> Delta | None:
    """Hash the local file and compare; None when a patch would not pay (most blocks changed) and the file goes
    whole. A file that changed while it was hashed gets an unstable Delta: it is hashed again, never put (a
    put of a changing file is dropped, and the drop would remove the host's whole copy)."""
    hashed = hash_stable(path)
    if hashed is None:
        return None
    size, mtime_ns, digests = hashed
    if digests is None:
        return Delta(size, mtime_ns, b"", [], stable=False)
    changed = changed_blocks(host_digests, digests)
    if len(changed) > DELTA_MAX_FRACTION * block_count(size):
        return None
    return Delta(size, mtime_ns, digests, changed)
