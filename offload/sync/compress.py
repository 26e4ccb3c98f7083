"""Compression that pays for itself: a sync's bytes go compressed only where that makes them arrive sooner.

Each frame (at most protocol.CHUNK bytes, frames.py) is judged on a sample of it: compressed at level 1, the
sample must shrink, and the time to compress must cost less than the link saves. The link's rate is the sync's
own: the agent client counts the bytes it hands over and the time the link takes to take them. On loopback
(hundreds of MB/s) nothing pays and bytes go raw, not even framed; over Wi-Fi a token file goes at a sixth.
The codec is the best one both ends have: zstd where the agent can decode it (its hello says), else zlib.
"""
from __future__ import annotations

import os
import time
import zlib

import zstandard

from offload.errors import OffloadError

MODE_ENV = "OFFLOAD_COMPRESS"  # auto (the default) | always | never: `always` compresses every frame, shrinking or not
MODES = ("auto", "always", "never")
SAMPLE_BYTES = 64 << 10  # what a frame is judged on
WORTH = 0.97  # compressed, a frame must arrive in at most this share of its raw time (floats' 1.08x pays on Wi-Fi)
BEST_RATIO = 0.1  # the most any data is expected to shrink: a link too fast for that goes unframed
WINDOW_BYTES = 4 << 20  # the link's rate is measured over this much sent (past its buffers, it waits for the link)
SMALL_BODY = 256 << 10  # a body this small may go raw unsampled, after samples that did not pay ...
SKIP_FIRST, SKIP_MOST = 64 << 10, 1 << 20  # ... for this many bytes, doubled a miss (a tree of small random files:
#                                            one sample in thousands of files, not one a file)
JUDGED_FROM = 2048  # a smaller sample's miss says nothing of the data (an empty __init__.py cannot shrink)


def mode_from_env() -> str:
    mode = os.environ.get(MODE_ENV, "auto") or "auto"
    if mode not in MODES:
        raise OffloadError(f"{MODE_ENV}={mode}: not one of {', '.join(MODES)}", hint=f"unset {MODE_ENV}, or set it to auto")
    return mode


def worth_compressing(ratio: float, codec_rate: float | None, link_rate: float | None) -> bool:
    """Pure: whether bytes that shrink to `ratio` of their size, compressed at codec_rate bytes/s, arrive sooner
    over a link that takes link_rate bytes/s: compressing costs 1/codec_rate a byte, and saves (1 - ratio)/link_rate.
    An unknown link is taken as a slow one (the first few MiB tell); an unknown codec speed as no cost."""
    if ratio >= WORTH:
        return False
    if link_rate is None or codec_rate is None:
        return True
    return link_rate / codec_rate + ratio <= WORTH


class Encoder:
    """One codec at level 1, timed: its rate (raw bytes a second) is part of every decision."""

    def __init__(self, name: str):
        self.name = name
        self.compress_raw = zstandard.ZstdCompressor(level=1, write_checksum=True).compress if name == "zstd" \
            else (lambda data: zlib.compress(data, 1))
        self.raw_bytes, self.seconds = 0, 0.0

    def compress(self, data: bytes) -> bytes:
        started = time.perf_counter()
        blob = self.compress_raw(data)
        self.seconds += time.perf_counter() - started
        self.raw_bytes += len(data)
        return blob

    @property
    def rate(self) -> float | None:
        return self.raw_bytes / self.seconds if self.raw_bytes >= SAMPLE_BYTES and self.seconds > 0 else None


class Compression:
    """A sync's choices: which codec, whether a body goes in frames at all, and how each frame goes."""

    def __init__(self, agent, mode: str):
        shared = [name for name in agent.codecs if name in ("zstd", "zlib")] if mode != "never" else []
        self.agent, self.mode = agent, mode
        self.encoder = Encoder(shared[0]) if shared else None
        self.window = (agent.written_bytes, agent.write_seconds)  # each sync measures its own: links change
        self.link_rate = None
        self.used = False  # whether any frame went compressed
        self.skip_bytes, self.skip_step = 0, SKIP_FIRST  # small bodies still to go raw unsampled; the next skip

    def framed(self, size: int) -> bool:
        """Whether the next body (of size bytes) goes in frames: no codec, or a link too fast for any data to pay,
        sends it raw; so does a small body while the samples before it did not pay (a big one is always sampled)."""
        if self.encoder is None:
            return False
        if self.mode == "always":
            return True
        if size <= SMALL_BODY and self.skip_bytes > 0:
            self.skip_bytes -= size
            return False
        return worth_compressing(BEST_RATIO, self.encoder.rate, self.measure_link())

    def judged(self, paid: bool) -> None:
        """A sample paid (small bodies are sampled again from the next one on) or did not (the next skip_step
        bytes of small bodies go raw unsampled, and the step after that doubles)."""
        if paid:
            self.skip_bytes, self.skip_step = 0, SKIP_FIRST
        else:
            self.skip_bytes, self.skip_step = self.skip_step, min(2 * self.skip_step, SKIP_MOST)

    def measure_link(self) -> float | None:
        """The link's rate over the last WINDOW_BYTES handed to it (None until that much has gone)."""
        sent, seconds = self.agent.written_bytes - self.window[0], self.agent.write_seconds - self.window[1]
        if sent >= WINDOW_BYTES:
            self.link_rate = sent / max(seconds, 1e-9)
            self.window = (self.agent.written_bytes, self.agent.write_seconds)
        return self.link_rate

    def encode(self, raw: bytes, compressed_well: bool) -> tuple:
        """(codec or None, the frame's bytes); compressed_well: the frame before it in the body was, so this one
        is compressed without a sample first."""
        encoder = self.encoder
        if self.mode == "always":
            self.used = True
            return encoder.name, encoder.compress(raw)
        link_rate = self.measure_link()
        if not compressed_well:
            sample = raw[:SAMPLE_BYTES]
            sample_blob = encoder.compress(sample)
            paid = worth_compressing(len(sample_blob) / len(sample), encoder.rate, link_rate)
            if paid or len(sample) >= JUDGED_FROM:
                self.judged(paid)
            if not paid:
                return None, raw
            if len(sample) == len(raw):
                self.used = True
                return encoder.name, sample_blob
        blob = encoder.compress(raw)
        if not worth_compressing(len(blob) / len(raw), encoder.rate, link_rate):
            return None, raw  # its sample compressed, the rest did not: the time is spent, the bytes are not
        self.used = True
        return encoder.name, blob
