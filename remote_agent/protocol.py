"""The one definition of the messages between the laptop and the agent.

A message is one line: PREFIX, then a JSON object with a type "t", then a newline. A message whose
"size" field is set is followed by exactly that many raw bytes (file contents, log output), so bulk
data never pays for JSON or base64. Lines that do not start with PREFIX are noise (a .bashrc that
prints, a motd) and are never parsed. The version is in the prefix: an agent and a laptop of different
protocol versions cannot mistake each other's messages for their own.
"""
from __future__ import annotations

import json

VERSION = 1
PREFIX = b"@offload/%d " % VERSION
CHUNK = 1 << 20  # bulk data moves in 1 MiB pieces: never a whole file in memory
MAX_LINE = 64 << 20  # a manifest of 100k files fits; a runaway line does not


class ProtocolError(Exception):
    """The other side sent something that is not a message of this protocol."""


def encode(message_type: str, /, **fields) -> bytes:
    fields["t"] = message_type
    return PREFIX + json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def write_message(stream, message_type: str, /, **fields) -> None:
    stream.write(encode(message_type, **fields))
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

    def next_message(self) -> dict:
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
