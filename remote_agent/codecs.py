"""What this agent can decompress, said in its hello, and the decoding of one compressed frame (bodies.py).

zstd where this Python has it (`compression.zstd`, Python 3.14+, or an importable `zstandard`), zlib always:
the agent stays standard library only, so zstd is used only where the host already has it. Every frame is
one complete zstd frame with its checksum, or one zlib stream with its adler32: a damaged frame never decodes.
"""
from __future__ import annotations

import importlib.util
import os
import zlib

# Test seam: the codecs this agent claims, comma-separated, best first (`zlib` plays a host without zstd).
CODECS_ENV = "OFFLOAD_AGENT_CODECS"


class CorruptFrame(ValueError):
    """A compressed frame that does not decode to exactly the bytes its message says it holds."""


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing (compression before 3.14)
        return False


def decodable() -> list:
    """The codecs this agent decodes, best first; found without importing them (the hello stays quick)."""
    found = (["zstd"] if has_module("compression.zstd") or has_module("zstandard") else []) + ["zlib"]
    claimed = os.environ.get(CODECS_ENV)
    if claimed is not None:
        found = [name for name in claimed.split(",") if name in found]
    return found


def decode(codec: str, blob: bytes, raw_size: int) -> bytes:
    """The raw bytes of one frame; CorruptFrame unless it decodes whole to exactly raw_size bytes."""
    if codec == "zlib":
        decoder = zlib.decompressobj()
        try:
            raw = decoder.decompress(blob, raw_size + 1)  # never more than it claims: a zip bomb stops here
        except zlib.error as exc:
            raise CorruptFrame(f"zlib: {exc}") from None
        whole = decoder.eof and not decoder.unused_data and not decoder.unconsumed_tail
    elif codec == "zstd":
        raw, whole = decode_zstd(blob, raw_size)
    else:
        raise CorruptFrame(f"unknown codec {codec!r}")
    if not whole or len(raw) != raw_size:
        raise CorruptFrame(f"{codec}: {len(raw)} bytes where {raw_size} were sent")
    return raw


def decode_zstd(blob: bytes, raw_size: int) -> tuple:
    """(raw, whether the frame ended with the blob), through compression.zstd or zstandard."""
    try:
        from compression import zstd  # lazy: Python 3.14+ only; imported at the first compressed frame
    except ImportError:
        zstd = None
    try:
        if zstd is not None:
            decoder = zstd.ZstdDecompressor()
            raw = decoder.decompress(blob, max_length=raw_size + 1)
            return raw, decoder.eof and not decoder.unused_data
        import zstandard  # lazy: as above, where the host has it
        if zstandard.frame_content_size(blob) != raw_size:  # the frame says its size: never decode past it
            return b"", False
        return zstandard.ZstdDecompressor().decompress(blob, max_output_size=raw_size, allow_extra_data=False), True
    except Exception as exc:  # each library's own error type: all mean the frame is not what was sent
        raise CorruptFrame(f"zstd: {exc}") from None
