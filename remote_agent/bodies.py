"""The bytes one `put` or `patch` carries, read the same whether they came raw in its blob or compressed in the
`frame` messages after it (protocol.FRAME): the writers (putting.py, patching.py) only ever see raw bytes, so
what lands on disk, its fsync and its rename are the same either way.
"""
from __future__ import annotations

from . import codecs, protocol
from .protocol import RequestError


class Body:
    """`size` raw bytes of an entry; read(n) and pieces(n) serve them in order, drain() skips the rest.

    A compressed body is decoded one frame at a time (each at most protocol.CHUNK raw bytes). A frame that does
    not decode to what its message says is refused with a `corrupt` error: its entry is never written."""

    def __init__(self, inp, message: dict):  # inp: a protocol.Incoming
        self.inp, self.path = inp, message.get("path")
        self.codec = message.get("codec")
        self.size = message.get("raw_size") if self.codec else message.get("size", 0)
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise RequestError("bad_request", f"{self.path}: an entry of an unreadable size {self.size!r}")
        self.left = self.size  # not yet handed out
        self.frame, self.frame_at = b"", 0  # the decoded frame being served, and how far

    def read(self, count: int) -> bytes:
        """Exactly count bytes (fewer only where the stream ended)."""
        if not self.codec:
            piece = b"".join(protocol.read_exactly(self.inp, count))
            self.left -= len(piece)
            return piece
        parts = []
        while count:
            if self.frame_at == len(self.frame):
                self.next_frame()
            piece = self.frame[self.frame_at:self.frame_at + count]
            self.frame_at += len(piece)
            count -= len(piece)
            self.left -= len(piece)
            parts.append(piece)
        return b"".join(parts)

    def pieces(self, count: int):
        """Yield count bytes, in pieces of at most protocol.CHUNK."""
        while count:
            piece = self.read(min(count, protocol.CHUNK))
            count -= len(piece)
            yield piece

    def next_frame(self) -> None:
        message = self.inp.next_frame()
        if message is None:
            raise RequestError("bad_request", f"{self.path}: its compressed bytes ended {self.left} bytes early")
        raw_size, size = int(message.get("raw_size", -1)), int(message["size"])
        if not 0 < raw_size <= min(self.left, protocol.CHUNK):
            raise RequestError("bad_request", f"{self.path}: a frame of {raw_size} bytes, {self.left} left to send")
        blob = self.inp.read(size)
        if len(blob) != size:
            raise protocol.ProtocolError(f"stream ended {size - len(blob)} bytes before the end of a blob")
        if message.get("codec"):
            try:
                blob = codecs.decode(message["codec"], blob, raw_size)
            except codecs.CorruptFrame as exc:
                self.left = 0  # the rest of it is skipped, never decoded (protocol.Incoming skips stray frames)
                raise RequestError("corrupt", f"{self.path}: a compressed frame of it is damaged ({exc}); "
                                              "nothing of it was written") from None
        elif len(blob) != raw_size:
            raise RequestError("bad_request", f"{self.path}: a stored frame of {len(blob)} bytes, not {raw_size}")
        self.frame, self.frame_at = blob, 0

    def drain(self) -> None:
        """Skip what was not read (a refused or failed entry): a raw blob's rest; stray frames skip themselves."""
        if not self.codec and self.left > 0:
            for _ in protocol.read_exactly(self.inp, self.left):
                pass
        self.left = 0
