"""The one definition of what the laptop and the agent must agree on: the messages, and the few names and
numbers both sides compute with.

A message is one line: PREFIX, then a JSON object with a type "t", then a newline. A message whose
"size" field is set is followed by exactly that many raw bytes (file contents, log output), so bulk
data never pays for JSON or base64. Lines that do not start with PREFIX are noise (a .bashrc that
prints, a motd) and are never parsed. The version is in the prefix: an agent and a laptop of different
protocol versions cannot mistake each other's messages for their own.

Besides the framing: the requests the laptop sends and the fields each must carry (REQUESTS), the error a
request is refused with (RequestError), the reasons a sync gives for a path it kept and a fetch for a file it
withheld, the block size of the delta sync and its digests, and the name of a file offload is still writing
(PART_SUFFIX).
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple, Optional

VERSION = 1
PREFIX = b"@offload/%d " % VERSION
CHUNK = 1 << 20  # bulk data moves in 1 MiB pieces: never a whole file in memory
MAX_LINE = 64 << 20  # a manifest of 100k files fits; a runaway line does not

# Every request the laptop sends, with the fields it always sets. The agent serves exactly these
# (__main__.py) and refuses one without its fields before serving any of it.
REQUESTS = {
    "ping": (), "bye": (),  # ping: the laptop's link keeper checks a kept link before it reuses it
    "facts": (), "device": (), "bench": (),
    "prepare": ("workdir", "project"), "sync_done": (), "release_tree": (),  # a sync's beginning and end
    "blocks": ("project_dir", "paths"), "bases": ("project_dir", "wanted"), "apply": ("project_dir",),
    "setup_state": ("project_dir",),
    "start": ("run_dir", "cwd", "argv"), "free_port": (), "follow": ("run_dir",), "status": ("run_dir",),
    "stop": ("run_dir",), "queue": ("lock",),  # queue: who holds the GPU lock and who waits (waiting_line.py)
    "list_files": ("project_dir", "patterns"), "read_file": ("project_dir", "path"),
    "project_dirs": ("workdir",), "remove_project": ("workdir", "name"),  # `offload hosts clean` (cleaning.py)
}
ENTRIES = ("put", "patch", "digests", "bundle")  # what follows an `apply`, until an `end`
# A `put` or `patch` with a `codec` carries its bytes (raw_size of them: what its `size` would be) in the FRAME
# messages that follow it, not in a blob of its own: each frame is at most CHUNK raw bytes, compressed alone with
# that codec (its `codec` field) or stored raw (none), so neither side ever holds more than a frame (bodies.py).
FRAME = "frame"
# What the laptop sends during a `follow` with `stdin` (its stdin for the job, job_stdin.py): a `stdin` message
# with a blob, answered `stdin_ok` (`closed` once the job reads no more) before the next; `stdin_end` at its EOF.
FOLLOW_INPUT = ("stdin", "stdin_end")

# Why a sync left a path on the host alone (the `kept` of its reply); --force replaces either.
CHANGED_ON_HOST = "changed on the host since it was synced"
NOT_WRITTEN_BY_OFFLOAD = "on the host already, and not written by offload"

# Why `offload fetch RUN` withholds a file (see outputs.py): not that run's version any more.
CHANGED, NEWER, DELETED = "changed", "newer", "deleted"


class Withheld(NamedTuple):
    """A file of file_list's `withheld`: not the run's own version any more. On the wire it is a list."""
    path: str
    reason: str  # CHANGED or DELETED since the run wrote it; NEWER: the run left it alone, a later run did not
    by_run: Optional[str]  # the later run that did it; None when it was done on the host outside any run


# The delta sync: the laptop hashes big files in blocks, the host keeps those digests and applies patches.
BLOCK = 256 << 10  # 4096 blocks per GiB: 64 KiB of digests, and a 1 MiB edit costs at most 1.25 MiB sent
DIGEST_BYTES = 16  # xxh3_128, computed on the laptop

HOST_LOCK = "~/.offload/gpu.lock"  # the lock a run or setup asks for: one per host account (see hostlock.py)
DEFAULT_PATTERNS = ("out/**",)  # what `offload fetch` takes when given no pattern

PART_SUFFIX = ".offload-part"  # `.NAME.offload-part`: NAME while offload writes it; never synced or fetched


def block_count(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK


def range_length(first: int, count: int, size: int) -> int:
    """The bytes of blocks first .. first + count - 1 of a file of `size` bytes (its last block may be short)."""
    return min(count * BLOCK, size - first * BLOCK)


def beside(path: str, suffix: str = PART_SUFFIX) -> str:
    """dir/NAME -> dir/.NAME<suffix>: where offload writes NAME until it is whole."""
    return os.path.join(os.path.dirname(path), "." + os.path.basename(path) + suffix)


class RequestError(Exception):
    """A request the agent refuses or cannot serve: answered with one `error` message of this code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def check_request(message: dict) -> None:
    """Refuse a request of no known type, or without a field it must carry."""
    kind = message["t"]
    if not isinstance(kind, str) or kind not in REQUESTS:
        raise RequestError("bad_request", f"unknown request {kind!r}")
    missing = [name for name in REQUESTS[kind] if name not in message]
    if missing:
        raise RequestError("bad_request", f"the {kind!r} request needs {', '.join(map(repr, missing))}")


class ProtocolError(Exception):
    """The other side sent something that is not a message of this protocol."""


def encode(message_type: str, /, **fields) -> bytes:
    fields["t"] = message_type
    return PREFIX + json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def write_message(stream, message_type: str, /, **fields) -> None:
    stream.write(encode(message_type, **fields))
    stream.flush()


def send_blob(stream, message_type: str, offset: int, data: bytes) -> None:
    """A message for a piece of a log or file that starts at `offset`, and the piece."""
    stream.write(encode(message_type, offset=offset, size=len(data)))
    stream.write(data)
    stream.flush()


def read_message(stream, noise=None) -> dict | None:
    """The next message, or None at end of stream. Noise lines go to `noise(line)` if given."""
    while True:
        line = stream.readline(MAX_LINE)
        if not line:
            return None
        start = line.find(PREFIX)
        if start > 0:  # noise printed without a newline (`printf` in a .bashrc) runs into the message
            if noise is not None:
                noise(line[:start])
            line = line[start:]
        if start >= 0:
            if not line.endswith(b"\n"):
                raise ProtocolError("message line truncated")
            try:
                message = json.loads(line[len(PREFIX):])
            except (ValueError, RecursionError) as exc:  # RecursionError: brackets nested past the decoder's depth
                raise ProtocolError(f"unreadable message: {exc}") from None
            if not isinstance(message, dict) or "t" not in message:
                raise ProtocolError("message without a type")
            return message
        if noise is not None:
            noise(line)


def read_exactly(stream, size: int):
    """Yield the `size` bytes that follow a message, in pieces of at most CHUNK."""
    remaining = size
    while remaining:
        piece = stream.read(min(remaining, CHUNK))
        if not piece:
            raise ProtocolError(f"stream ended {remaining} bytes before the end of a blob")
        remaining -= len(piece)
        yield piece


class BlobOverrun(ValueError):
    """A message's own fields ask for more bytes than its blob holds: a malformed message, not a lost link."""


class Incoming:
    """The laptop's stream during a request that reads one (apply): messages, each with its blob, until `end`.

    Every read of a blob goes through here and stops at that blob's end. So whatever goes wrong while one
    message is handled, skip_to_end() finds the next message where it starts, and the agent can answer the
    request with an error and serve the next one on the same channel."""

    def __init__(self, stream):
        self.stream, self.blob_left, self.ended = stream, 0, False
        self.unread = None  # a message a frame reader met where a frame should be: the next one served

    def next_message(self) -> dict:
        """The next entry or `end`; the frames of an entry nobody read (refused, or after a failure) are skipped."""
        while True:
            message = self.next_any()
            if message["t"] != FRAME:
                return message

    def next_frame(self) -> dict | None:
        """The next message if it is a frame, else None (that message is served next)."""
        message = self.next_any()
        if message["t"] == FRAME:
            return message
        self.unread = message
        return None

    def next_any(self) -> dict:
        if self.unread is not None:
            message, self.unread = self.unread, None
            return message
        self.skip_blob()
        message = read_message(self.stream)
        if message is None:
            raise ProtocolError("the laptop went away in the middle of a request")
        size = message.get("size", 0)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:  # where the next message starts is lost
            raise ProtocolError(f"a {message['t']!r} message with an unreadable blob size {size!r}")
        self.blob_left, self.ended = size, message["t"] == "end"
        return message

    def read(self, count: int) -> bytes:
        if count > self.blob_left:
            raise BlobOverrun(f"a message asked for {count - self.blob_left} bytes past the end of its blob")
        piece = self.stream.read(count)
        self.blob_left -= len(piece)
        return piece

    def skip_blob(self) -> None:
        for _ in read_exactly(self.stream, self.blob_left):
            pass
        self.blob_left = 0

    def skip_to_end(self) -> None:
        while not self.ended:
            self.next_message()
        self.unread = None
