"""Content the host already has is never sent again: a big file about to go whole (a new path, a renamed data
dir, the same data in a second project) goes as a patch against a file the host has that shares most of its
blocks, found by the host's content index (remote_agent/content_index.py) across every project dir there.

One round trip: the laptop hashes each such file in blocks and sends a sample of its digests; the host answers
with the best base of each and that base's digests. Only the blocks that differ travel, with the whole file's
SHA-256, which the host checks before the result takes the path (remote_agent/based.py).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from remote_agent.protocol import DIGEST_BYTES, block_count

from offload.sync.blocks import DELTA_MAX_FRACTION, Delta, changed_blocks, hash_stable

SAMPLES = 32  # digests per file the host compares: a base needs more than half of them at the same offsets


def sample_indexes(count: int) -> list:
    """Up to SAMPLES block indexes spread evenly over a file of count blocks, first and last included."""
    if count <= SAMPLES:
        return list(range(count))
    return sorted({round(i * (count - 1) / (SAMPLES - 1)) for i in range(SAMPLES)})


def local_digests(path: Path) -> tuple | None:
    """(size, mtime_ns, block digests) of the local file; None if it is gone or changed while it was hashed."""
    hashed = hash_stable(path)
    return hashed if hashed is not None and hashed[2] is not None else None


def local_sha256(path: Path, size: int, mtime_ns: int) -> str | None:
    """The file's SHA-256, if it is still (size, mtime_ns) after it was read; else None."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for piece in iter(lambda: f.read(1 << 20), b""):
                digest.update(piece)
            after = os.fstat(f.fileno())
    except OSError:
        return None
    return digest.hexdigest() if (after.st_size, after.st_mtime_ns) == (size, mtime_ns) else None


def plan_based(agent, project_root: Path, project_dir: str, paths: list) -> dict:
    """path -> Delta with a base, for those of paths (big files to be sent whole) the host has most of."""
    hashed = {path: local_digests(project_root / path) for path in paths}
    hashed = {path: found for path, found in hashed.items() if found is not None}
    if not hashed:
        return {}
    wanted = [[path, [[i, digests[i * DIGEST_BYTES:(i + 1) * DIGEST_BYTES].hex()]
                      for i in sample_indexes(len(digests) // DIGEST_BYTES)]]
              for path, (_, _, digests) in hashed.items()]
    reply = agent.request("bases", project_dir=project_dir, wanted=wanted)
    blob, offset, deltas = b"".join(agent.read_blob(int(reply["size"]))), 0, {}
    for path, name, relpath, count in reply["found"]:
        base_digests = blob[offset:offset + count * DIGEST_BYTES]
        offset += count * DIGEST_BYTES
        size, mtime_ns, digests = hashed[path]
        changed = changed_blocks(base_digests, digests)
        if len(changed) > DELTA_MAX_FRACTION * block_count(size):
            continue  # a whole put writes less on the host
        sha256 = local_sha256(project_root / path, size, mtime_ns)
        if sha256 is not None:
            deltas[path] = Delta(size, mtime_ns, digests, changed, base=[name, relpath], sha256=sha256)
    return deltas
