"""How one entry's bytes leave the laptop: raw in its message's blob, or in frames (protocol.FRAME) that
compress.py compresses or stores one at a time, so a file of any size is never whole in memory."""
from __future__ import annotations

from remote_agent import protocol


class RawBody:
    """The bytes as they are, straight to the agent, after a message whose `size` says how many."""

    def __init__(self, agent, size: int):
        self.agent, self.fields = agent, {"size": size}

    def write(self, data: bytes) -> None:
        self.agent.write(data)

    def close(self) -> None:
        pass


class FramedBody:
    """The bytes in frames of at most protocol.CHUNK raw bytes, after a message with `codec` and `raw_size`."""

    def __init__(self, agent, size: int, compression):
        self.agent, self.compression = agent, compression
        self.fields = {"codec": compression.encoder.name, "raw_size": size}
        self.pending = bytearray()
        self.compressed_well = False  # the last frame was: the next is compressed without a sample

    def write(self, data: bytes) -> None:
        if not self.pending and len(data) == protocol.CHUNK:  # a file read a CHUNK at a time: no copy
            self.send_frame(data)
            return
        self.pending += data
        while len(self.pending) >= protocol.CHUNK:
            self.send_frame(self.pending[:protocol.CHUNK])  # a copy: the slice is deleted next
            del self.pending[:protocol.CHUNK]

    def close(self) -> None:
        if self.pending:
            self.send_frame(self.pending)
            self.pending = bytearray()

    def send_frame(self, raw: bytes) -> None:
        codec, blob = self.compression.encode(raw, self.compressed_well)
        self.compressed_well = codec is not None
        codec_field = {"codec": codec} if codec else {}
        self.agent.write(protocol.encode(protocol.FRAME, size=len(blob), raw_size=len(raw), **codec_field))
        self.agent.write(blob)


def open_body(agent, size: int, compression):
    """The writer for an entry of `size` bytes; its `fields` go in the entry's message."""
    if compression is not None and compression.framed(size):
        return FramedBody(agent, size, compression)
    return RawBody(agent, size)
