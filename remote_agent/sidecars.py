"""The laptop's block digests of each big file, kept on the host beside it for the next delta sync.

The agent never hashes: after a whole big file arrives, the laptop sends the digests of its blocks (protocol.BLOCK)
and they are kept in a sidecar, `.offload/blocks/<sha256 of the path>`, with the (size, mtime_ns, inode) the
file had once written. A sidecar that no longer matches the file (a run or a person changed it) is never used:
the laptop, finding no digests, sends the file whole.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat

from . import durable, protocol
from .protocol import BLOCK, DIGEST_BYTES, block_count

BLOCKS_DIR = os.path.join(".offload", "blocks")


def path_key(relpath: str) -> str:
    """A file name for relpath: its sidecar's, and its patch marker's (journals.py)."""
    return hashlib.sha256(relpath.encode()).hexdigest()[:32]


def write_sidecar(project_dir: str, relpath: str, st: os.stat_result, digests: bytes) -> None:
    """One JSON header line, then the raw digests; written under a temporary name and renamed."""
    directory = os.path.join(project_dir, BLOCKS_DIR)
    os.makedirs(directory, exist_ok=True)
    header = {"path": relpath, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "block": BLOCK,
              "count": len(digests) // DIGEST_BYTES}
    durable.write_durably(os.path.join(directory, path_key(relpath)), json.dumps(header).encode() + b"\n" + digests)


def read_sidecar(project_dir: str, relpath: str, st: os.stat_result) -> bytes | None:
    """The stored digests, if they describe the file whose lstat is st exactly; else None."""
    found = load(os.path.join(project_dir, BLOCKS_DIR, path_key(relpath)))
    return found[1] if found is not None and describes(found[0], found[1], relpath, st) else None


def load(sidecar: str) -> tuple | None:
    """(header, digests) of the sidecar file at that path; None if it cannot be read."""
    try:
        with open(sidecar, "rb") as f:
            header = json.loads(f.readline())
            digests = f.read()
    except (OSError, ValueError):
        return None
    return (header, digests) if isinstance(header, dict) else None


def describes(header: dict, digests: bytes, relpath: str, st: os.stat_result) -> bool:
    """Whether a sidecar's header and digests are those of relpath's file as its lstat st says it is now."""
    expected = {"path": relpath, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "block": BLOCK,
                "count": block_count(st.st_size)}
    return stat.S_ISREG(st.st_mode) and header == expected and len(digests) == expected["count"] * DIGEST_BYTES


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
