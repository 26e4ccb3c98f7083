"""Compression that pays for itself (issue 14, point 1), through the real CLI and a real sshd: what compresses
goes compressed where the link is slow (counted on a veth of a network namespace, behind a `tc` rate limit),
random bytes go raw, a host without zstd gets zlib, and a damaged compressed frame is refused whole."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import zstandard

from conftest import register_host, run_offload
from netns_hosts import two_hosts  # noqa: F401  (the fixture)
from test_agent_errors import start_apply

from offload.errors import RemoteError
from offload.sync.compress import BEST_RATIO, SKIP_MOST, SMALL_BODY, Compression, worth_compressing
from offload.sync.push import project_dir_name
from remote_agent import protocol

MiB = 1 << 20
WORDS = [f"{stem}{tail}" for stem in ("the", "loss", "step", "token", "grad", "layer", "attn", "mlp", "norm", "lr")
         for tail in ("", "s", "ed", "ing", "_0", "_1", "=", ":", ".", ",")]


def compressible(size: int, seed: int) -> bytes:
    """Text of a small vocabulary, as logs and token files are: zstd -1 takes it to a third or less."""
    rng = random.Random(seed)
    text = " ".join(rng.choices(WORDS, k=size // 4)).encode()
    return (text * (size // len(text) + 1))[:size]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_of(root: Path) -> dict:
    """relpath -> (sha256, mode) of every file below root, the host's .offload/ and part files left out."""
    found = {}
    for path in root.rglob("*"):
        relpath = path.relative_to(root).as_posix()
        if path.is_file() and not relpath.startswith(".offload/"):
            found[relpath] = (sha256(path), stat.S_IMODE(path.stat().st_mode))
    return found


def make_project(root: Path, big: bool = False) -> Path:
    root.mkdir(parents=True)
    (root / "text.log.txt").write_bytes(compressible(3 * MiB + 12345, 1))  # frames of 1 MiB and a short last one
    (root / "noise.bin").write_bytes(os.urandom(2 * MiB + 777))
    (root / "mixed.bin").write_bytes(compressible(MiB, 2) + os.urandom(MiB) + compressible(MiB // 2, 3))
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text("print('hello')\n" * 50)
    (root / "empty").write_bytes(b"")
    (root / "tiny").write_bytes(b"x")
    if big:  # above offload/sync/blocks.py's DELTA_MIN_BYTES: a change goes as a patch
        (root / "tokens.bin").write_bytes(compressible(9 * MiB, 4))
    return root


def sync(project: Path, mode: str, **env) -> str:
    result = run_offload("sync", "--project", str(project), env={"OFFLOAD_COMPRESS": mode, **env})
    assert result.returncode == 0, result.stderr
    return result.stderr + result.stdout


@pytest.mark.parametrize("mode", ["always", "never", "auto"])
def test_compressible_and_random_files_and_patches_arrive_byte_for_byte_compressed_or_not(box, tmp_path, mode):
    project = make_project(tmp_path / "proj", big=True)
    host_dir = Path(box["workdir"]) / project_dir_name(project)
    said = sync(project, mode)
    assert files_of(host_dir) == files_of(project)
    if mode != "auto":  # auto decides by the link's rate: its first MiB on loopback may go either way
        assert ("sent with zstd" in said) == (mode == "always"), said
    with open(project / "tokens.bin", "r+b") as f:  # a patch: 1 MiB of new text in the middle
        f.seek(4 * MiB)
        f.write(compressible(MiB, 5))
    said = sync(project, mode)
    assert "by delta" in said, said
    if mode != "auto":
        assert ("sent with zstd" in said) == (mode == "always"), said
    assert files_of(host_dir) == files_of(project)
    assert not list(host_dir.rglob(f"*{protocol.PART_SUFFIX}"))


def test_a_host_without_zstd_gets_zlib_and_the_same_bytes(offload_home, sshd, tmp_path):
    python = tmp_path / "python-without-zstd"  # the host's python, as a host whose agent decodes zlib only
    python.write_text(f"#!/bin/sh\nOFFLOAD_AGENT_CODECS=zlib exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    host = register_host(offload_home, sshd, python=str(python))
    project = make_project(tmp_path / "proj")
    said = sync(project, "always")
    assert "sent with zlib" in said, said
    assert files_of(Path(host["workdir"]) / project_dir_name(project)) == files_of(project)


def veth_tx_bytes(veth: str) -> int:
    return int(Path(f"/sys/class/net/{veth}/statistics/tx_bytes").read_text())


def wire_bytes_of_a_sync(project: Path, veth: str, mode: str) -> int:
    before = veth_tx_bytes(veth)
    sync(project, mode)
    return veth_tx_bytes(veth) - before


def test_bytes_on_the_wire_shrink_where_they_compress_and_the_link_is_slow(two_hosts, offload_home, tmp_path):
    """Counted on the veth to the host's namespace: laptop-to-host packets only, with their TCP/IP headers."""
    server, veth = two_hosts.servers[0], two_hosts.veths[0]
    register_host(offload_home, server)
    size = 16 * MiB
    for name in ("never", "always"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "text.txt").write_bytes(compressible(size, 6))
    raw = wire_bytes_of_a_sync(tmp_path / "never", veth, "never")
    compressed = wire_bytes_of_a_sync(tmp_path / "always", veth, "always")
    assert raw > size and compressed < 0.5 * size, (raw, compressed)

    # 100 Mbit/s towards the host, as a home LAN: auto compresses the text, and sends random bytes raw.
    subprocess.run(["tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", "100mbit", "burst", "256kb",
                    "latency", "50ms"], check=True, timeout=10)
    (tmp_path / "auto").mkdir()
    (tmp_path / "auto" / "text.txt").write_bytes(compressible(size, 7))
    assert wire_bytes_of_a_sync(tmp_path / "auto", veth, "auto") < 0.5 * size
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "noise.bin").write_bytes(os.urandom(8 * MiB))
    assert wire_bytes_of_a_sync(tmp_path / "random", veth, "auto") > 8 * MiB
    for name in ("auto", "random"):
        host_dir = Path(register_host(offload_home, server)["workdir"]) / project_dir_name(tmp_path / name)
        assert files_of(host_dir) == files_of(tmp_path / name)


def test_compression_pays_only_on_a_link_slower_than_the_codec():
    zstd_token_data = (563e6, 0.147)  # the measurements: zstd -1 on a uint16 token file ...
    zstd_random_floats = (563e6, 0.93)  # ... and on random floats
    for link_rate in (12.5e6, 125e6):  # 100 Mbit/s, 1 Gbit/s
        assert worth_compressing(zstd_token_data[1], zstd_token_data[0], link_rate)
    # Floats shrink by 7%: that pays where the codec costs 2% of the link's time, not where it costs 20%.
    assert worth_compressing(zstd_random_floats[1], zstd_random_floats[0], 12.5e6)
    assert not worth_compressing(zstd_random_floats[1], zstd_random_floats[0], 125e6)
    assert not worth_compressing(1.0, 563e6, 12.5e6)  # random bytes: never
    assert not worth_compressing(BEST_RATIO, 563e6, 600e6)  # loopback: nothing is worth a codec's time
    assert worth_compressing(0.5, None, None)  # before the first MiB tell: taken as a slow link


class UnmeasuredLink:
    """What Compression reads of an agent client: the codecs of its hello, and no link rate measured yet
    (taken as a slow link, where everything that shrinks pays)."""
    codecs, written_bytes, write_seconds = ["zstd"], 0, 0.0


def send_body(compression: Compression, data: bytes) -> str:
    """How a body goes, as send.py sends it: 'raw' unframed, or its first frame 'sampled and stored' /
    'compressed'."""
    if not compression.framed(len(data) + 1):
        return "raw"
    codec, _ = compression.encode(data + b"\1", compressed_well=False)  # its one frame: the bytes and the status byte
    return "compressed" if codec else "sampled and stored"


def test_small_random_bodies_are_sampled_rarely_and_what_compresses_still_goes_compressed():
    """A tree of small random files costs one sample in many files, not one a file; a big body is sampled
    whatever the small ones said; and once small bodies compress again, at most SKIP_MOST of them went raw."""
    compression = Compression(UnmeasuredLink(), "auto")
    ways = [send_body(compression, os.urandom(4096)) for _ in range(2000)]  # 8 MiB of random 4 KiB files
    assert ways.count("raw") > 1950 and 3 <= ways.count("sampled and stored") <= 15, ways.count("raw")
    assert send_body(compression, os.urandom(SMALL_BODY + 1)) == "sampled and stored"  # big: never skipped
    text_ways = [send_body(compression, compressible(4096, seed)) for seed in range(600)]
    first_compressed = text_ways.index("compressed")
    assert first_compressed * 4096 <= SKIP_MOST
    assert text_ways[first_compressed:] == ["compressed"] * (600 - first_compressed)
    # A source tree's tiny files (an empty __init__.py) cannot shrink: their misses skip nothing after them.
    tiny_then_text = [send_body(compression, data) for data in [b"", b"x" * 10, b"# -*- coding: utf-8 -*-\n"] * 20
                      + [compressible(4096, 7)]]
    assert tiny_then_text[-1] == "compressed" and "raw" not in tiny_then_text


# --- a damaged compressed frame, sent by hand through the real sshd -------------------------------------------

def compressed_put(path: str, data: bytes, codec: str, damage: bool = False, claim: int | None = None) -> bytes:
    """A put of data in frames of protocol.CHUNK, as the laptop sends it; damage: one bit of the first frame
    flipped (the frames after it then stand in the stream unread); claim: a first frame that says it holds
    that many bytes (fewer than it does)."""
    body = data + b"\1"  # the bytes, then the laptop's status byte: the file stayed one version while read
    compress = zstandard.ZstdCompressor(level=1, write_checksum=True).compress if codec == "zstd" \
        else (lambda raw: zlib.compress(raw, 1))
    frames = []
    for start in range(0, len(body), protocol.CHUNK):
        raw = body[start:start + protocol.CHUNK]
        blob = compress(raw)
        if damage and start == 0:
            blob = blob[:len(blob) // 2] + bytes([blob[len(blob) // 2] ^ 0x40]) + blob[len(blob) // 2 + 1:]
        raw_size = claim if claim is not None and start == 0 else len(raw)
        frames.append(protocol.encode(protocol.FRAME, size=len(blob), raw_size=raw_size, codec=codec) + blob)
    return protocol.encode("put", path=path, kind="file", mode=0o644, mtime_ns=1_700_000_000_000_000_000,
                           codec=codec, raw_size=len(body)) + b"".join(frames)


@pytest.mark.parametrize("codec", ["zstd", "zlib"])
@pytest.mark.parametrize("how", ["damaged", "longer than it claims"])
def test_a_damaged_compressed_frame_is_refused_and_nothing_lands_under_its_name(link, codec, how):
    agent, workdir = link
    data = compressible(2 * protocol.CHUNK + 300_000, 8)  # three frames
    project_dir = start_apply(agent, workdir, f"corrupt-{codec}-{how[:4]}-0123abcd")
    bad = compressed_put("weights.bin", data, codec, damage=how == "damaged",
                         claim=None if how == "damaged" else 1000)
    agent.write(bad + protocol.encode("end"), flush=True)
    with pytest.raises(RemoteError) as excinfo:
        agent.recv()
    assert excinfo.value.code == "corrupt", excinfo.value.detail
    assert "weights.bin" in excinfo.value.detail
    host_dir = Path(project_dir)
    assert not (host_dir / "weights.bin").exists()
    assert not list(host_dir.rglob(f"*{protocol.PART_SUFFIX}"))
    assert agent.request("ping")["t"] == "pong"  # the channel is still in step

    agent.send("apply", project_dir=project_dir, delete=[], forget=[])  # the same put, whole: it lands
    agent.write(compressed_put("weights.bin", data, codec) + protocol.encode("end"), flush=True)
    assert agent.recv()["written"] == 1
    assert (host_dir / "weights.bin").read_bytes() == data
