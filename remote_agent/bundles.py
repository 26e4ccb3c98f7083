"""A `bundle` of a sync: many small files in one message (offload/sync/bundles.py), each written as its own
`put` would be: checked against what stands at its path (receiving.py), written as a part file, made durable
with its batch, renamed only onto what is still the sync's.

The message's `files` are [path, mode, mtime_ns, size] in the order of their bytes in its body; the laptop read
each whole and unchanged, so no status byte follows a file. The body is read whole first (at most MAX_BYTES):
a link lost in the middle of one writes none of its files.
"""
from __future__ import annotations

from .bodies import Body
from .protocol import RequestError
from .putting import write_entry

MAX_BYTES = 8 << 20  # a bundle's body held in memory at once (the laptop sends 1 MiB)


def files_of(message: dict, body_size: int) -> list:
    """The bundle's files, checked: a malformed list is refused whole, before anything is written."""
    files = message.get("files")
    if not isinstance(files, list) or body_size > MAX_BYTES:
        raise RequestError("bad_request", f"a bundle of {body_size} bytes without a readable list of its files")
    total = 0
    for item in files:
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in item[1:])):
            raise RequestError("bad_request", f"a bundle's file described as {item!r}")
        total += item[3]
    if total != body_size:
        raise RequestError("bad_request", f"a bundle's files add up to {total} bytes, its body holds {body_size}")
    return files


def receive_bundle(receiving, inp, message: dict, batch, failure: Exception | None) -> Exception | None:
    """Write a bundle's files through receiving (a receiving.Receiving); returns the apply's first failure.
    Its body is always consumed from the stream, written or not."""
    body = Body(inp, message)
    try:
        files = files_of(message, body.size)
        if failure is not None or batch.failure is not None:
            return failure or batch.failure
        data = memoryview(body.read(body.size))
        if len(data) != body.size:
            raise RequestError("bad_request", f"a bundle's body ended {body.size - len(data)} bytes early")
    except RequestError as exc:
        return failure or exc
    finally:
        body.drain()
    offset = 0
    for relpath, mode, mtime_ns, size in files:
        piece, offset = data[offset:offset + size], offset + size
        path, failure = receiving.place(relpath, batch, failure)
        if failure is not None:
            return failure
        if path is not None:
            failure = write_one(receiving, relpath, path, {"path": relpath, "kind": "file", "mode": mode,
                                                           "mtime_ns": mtime_ns, "size": size}, piece, batch)
    return failure


def write_one(receiving, relpath: str, path: str, header: dict, piece, batch) -> Exception | None:
    """One file of a bundle, as receiving.receive_entries writes a put's; the failure, if it fails."""
    try:
        current, replaceable = receiving.standing(relpath, path)
        if not replaceable:
            return None
        write_entry(path, header, (piece,) if len(piece) else (), lambda: True, batch, receiving.make_dirs,
                    current, receiving.commit_step(relpath, path), relpath)
        receiving.tally["bytes"] += len(piece)
    except OSError as exc:
        if exc.filename is None:  # a failed write or close names no file: say which one it was
            exc.filename = relpath
        return exc
    except RequestError as exc:
        return exc
    return None
