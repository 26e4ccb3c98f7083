"""The host side of a sync, driven through a real agent subprocess (offload.agent.start_local): files are
written under a temporary name and renamed when whole, a file that changed while it was sent is dropped,
a full disk is reported and leaves nothing half-written, and a laptop that goes away leaves no partial file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import small_disk_at
from procs import alive, local_agent  # noqa: F401  (local_agent: the fixture)
from sshd_server import wait_for

from offload.transport.agent import start_local
from offload.errors import OffloadError, RemoteError
from offload.sync.scan import scan_project
from offload.sync.push import project_dir_name, sync_project
from offload.sync.send import send_entry
from remote_agent import protocol

PART_SUFFIX = ".offload-part"
MiB = 1 << 20


@pytest.fixture
def agent(local_agent):
    """A real agent process (procs.local_agent), checked gone afterwards."""
    return local_agent


def start_apply(agent, workdir: Path, project: Path, paths: list) -> str:
    agent.send("prepare", workdir=str(workdir), project=project_dir_name(project))
    project_dir = skip_ticks(agent)["project_dir"]
    agent.send("apply", project_dir=project_dir, delete=[], forget=[], paths=paths)
    return project_dir


WHOLE = b"\1"  # the status byte after a file's bytes: it did not change while the laptop read it


def put_header(path: str, size: int, mtime_ns: int = 1_700_000_000_123_456_789, mode: int = 0o640) -> bytes:
    """A put of a file of `size` bytes: its blob is those bytes and the status byte."""
    return protocol.encode("put", path=path, kind="file", mode=mode, mtime_ns=mtime_ns, size=size + 1)


def put_file(agent, path: str, data: bytes, **fields) -> None:
    agent.write(put_header(path, len(data), **fields) + data + WHOLE, flush=True)


def parts(root: Path) -> list:
    return sorted(str(p) for p in root.rglob(f"*{PART_SUFFIX}"))


def offload_files(project_dir: Path) -> list:
    """What offload keeps in the host project's .offload/, less the sync's and the tree's lock files."""
    return sorted(set(os.listdir(project_dir / ".offload")) - {"sync.lock", "tree.lock"})


def synced_paths(project_dir: str, agent=None) -> list:
    """What synced.json names; with agent, once it has answered a ping (it saves them right after a reply)."""
    if agent is not None:
        agent.request("ping")
    return sorted(json.loads((Path(project_dir) / ".offload" / "synced.json").read_text())["paths"])


def test_a_file_is_written_under_a_part_name_and_renamed_when_whole(agent, tmp_path):
    data = os.urandom(3 * MiB)
    project_dir = Path(start_apply(agent, tmp_path / "host", tmp_path / "proj", ["w.bin"]))
    part = project_dir / f".w.bin{PART_SUFFIX}"
    agent.write(put_header("w.bin", len(data)) + data[: 2 * MiB], flush=True)

    assert wait_for(lambda: part.exists() and part.stat().st_size == 2 * MiB, 10)
    assert not (project_dir / "w.bin").exists()

    agent.write(data[2 * MiB:], flush=True)
    assert not (project_dir / "w.bin").exists()  # every byte is there, but not yet the laptop's word on them
    agent.write(WHOLE, flush=True)
    agent.send("end")
    assert agent.recv() == {"t": "applied", "written": 1, "deleted": 0, "bytes": len(data), "kept": []}
    st = os.stat(project_dir / "w.bin")
    assert (project_dir / "w.bin").read_bytes() == data
    assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o640, 1_700_000_000_123_456_789)
    assert parts(project_dir) == []
    assert synced_paths(str(project_dir), agent) == ["w.bin"]


def test_a_laptop_that_goes_away_mid_file_leaves_the_old_file_whole(agent, tmp_path):
    old, new = os.urandom(MiB), os.urandom(4 * MiB)
    project_dir = Path(start_apply(agent, tmp_path / "host", tmp_path / "proj", ["w.bin"]))
    put_file(agent, "w.bin", old)
    agent.send("end")
    agent.recv()
    agent.send("apply", project_dir=str(project_dir), delete=[], forget=[], paths=["w.bin"])
    part = project_dir / f".w.bin{PART_SUFFIX}"
    agent.write(put_header("w.bin", len(new)) + new[: 2 * MiB], flush=True)
    assert wait_for(lambda: part.exists() and part.stat().st_size == 2 * MiB, 10)

    agent.writer.close()  # the link drops in the middle of the file

    assert wait_for(lambda: not alive(agent.hello["pid"]), 10)
    assert (project_dir / "w.bin").read_bytes() == old
    assert parts(project_dir) == []
    assert synced_paths(str(project_dir)) == ["w.bin"]  # saved as the apply failed: the agent is gone


def test_a_second_sync_of_the_project_waits_for_the_first_and_a_vanished_laptops_part_never_spoils_it(agent, tmp_path):
    stale, fresh = os.urandom(4 * MiB), os.urandom(4 * MiB)
    workdir, project = tmp_path / "host", tmp_path / "proj"
    project_dir = Path(start_apply(agent, workdir, project, ["w.bin"]))
    part = project_dir / f".w.bin{PART_SUFFIX}"
    agent.write(put_header("w.bin", len(stale)) + stale[: 2 * MiB], flush=True)
    assert wait_for(lambda: part.exists() and part.stat().st_size == 2 * MiB, 10)

    second = start_local()
    try:
        second.send("prepare", workdir=str(workdir), project=project_dir_name(project))
        assert second.recv()["t"] == "sync_wait"  # the first sync holds the project: serialized, not interleaved
        agent.writer.close()  # the first laptop is gone now: its agent cleans up after itself
        assert wait_for(lambda: not alive(agent.hello["pid"]), 10)
        assert not (project_dir / "w.bin").exists() and parts(project_dir) == []

        assert skip_ticks(second)["t"] == "prepared"
        second.send("apply", project_dir=str(project_dir), delete=[], forget=[], paths=["w.bin"])
        second.write(put_header("w.bin", len(fresh)) + fresh + WHOLE, flush=True)
        second.send("end")
        assert second.recv()["written"] == 1
    finally:
        second.close()
    assert (project_dir / "w.bin").read_bytes() == fresh
    assert parts(project_dir) == []


def skip_ticks(agent) -> dict:
    while True:
        message = agent.recv()
        if message["t"] not in ("tick", "sync_wait"):
            return message


def grow(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"appended while sending")


def shrink(path: Path) -> None:
    os.truncate(path, 100)


def rewrite_in_place(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"new bytes, same size")


@pytest.mark.parametrize("change", [grow, shrink, rewrite_in_place])
def test_a_file_that_changes_while_it_is_sent_is_dropped_then_synced_whole(agent, tmp_path, change):
    project, workdir = tmp_path / "proj", tmp_path / "host"
    project.mkdir()
    local = project / "data.bin"
    local.write_bytes(os.urandom(3 * MiB))
    os.utime(local, ns=(1_000_000_000, 1_000_000_000))  # an old mtime: any write moves it
    [entry] = scan_project(project)
    project_dir = Path(start_apply(agent, workdir, project, [entry.path]))
    changes = []

    def advance(sent: int) -> None:  # called after each piece: change the file once, mid-transfer
        if not changes:
            changes.append(change(local))

    assert send_entry(agent, project, entry, advance) == entry
    agent.send("end")

    assert agent.recv()["written"] == 0
    assert not (project_dir / "data.bin").exists()  # never there under its name with bytes of two versions
    assert parts(project_dir) == []
    result = sync_project(agent, project, str(workdir), out=io.StringIO())
    assert (result.sent_files, result.unchanged) == (1, 0)
    assert (project_dir / "data.bin").read_bytes() == local.read_bytes()
    out = io.StringIO()
    assert sync_project(agent, project, str(workdir), out=out).unchanged == 1
    assert out.getvalue() == "sync: this machine is up to date (1 file)\n"


def test_a_file_that_keeps_changing_is_reported_and_never_synced(agent, tmp_path):
    project, workdir = tmp_path / "proj", tmp_path / "host"
    project.mkdir()
    log = project / "growing.bin"
    log.write_bytes(os.urandom(32 * MiB))
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "f = open(sys.argv[1], 'ab', buffering=0)\n"
        "while True:\n"
        "    f.write(b'x')\n"
        "    time.sleep(0.001)\n"), str(log)])
    try:
        size = log.stat().st_size
        assert wait_for(lambda: log.stat().st_size > size, 10)
        with pytest.raises(OffloadError) as raised:
            sync_project(agent, project, str(workdir), out=io.StringIO())
    finally:
        writer.kill()
        writer.wait(timeout=10)
    assert raised.value.message == "growing.bin kept changing while it was being sent; it was not synced"
    assert raised.value.hint == "stop whatever writes it, or add it to .offloadignore"
    project_dir = workdir / project_dir_name(project)
    assert not (project_dir / "growing.bin").exists()
    assert parts(project_dir) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs of this test's own, unmounted at the end."""
    with small_disk_at(tmp_path / "small") as mount_point:
        yield mount_point


def test_a_full_disk_while_writing_is_reported_and_leaves_nothing_half_written(agent, tmp_path, small_disk):
    project = tmp_path / "proj"
    project_dir = Path(start_apply(agent, small_disk, project, ["ok.txt"]))
    put_file(agent, "ok.txt", b"fits\n")
    agent.send("end")
    agent.recv()

    agent.send("apply", project_dir=str(project_dir), delete=[], forget=[], paths=["ok.txt", "big.bin", "after.txt"])
    put_file(agent, "big.bin", os.urandom(3 * MiB))
    put_file(agent, "after.txt", b"read, never written\n")
    agent.send("end")
    with pytest.raises(RemoteError) as raised:
        agent.recv()

    assert raised.value.code == "disk_full"
    assert raised.value.message == "this machine: No space left on device (big.bin)"
    assert sorted(os.listdir(project_dir)) == [".offload", "ok.txt"]
    assert offload_files(project_dir) == ["synced.json"]
    assert synced_paths(str(project_dir), agent) == ["ok.txt"]
    # The stream stayed in step: the same agent goes on serving.
    agent.send("apply", project_dir=str(project_dir), delete=[], forget=[])
    put_file(agent, "after.txt", b"now written\n")
    agent.send("end")
    assert agent.recv()["written"] == 1
    assert (project_dir / "after.txt").read_bytes() == b"now written\n"


@pytest.mark.parametrize("path", ["../outside.txt", "a/../../outside.txt", "/tmp/abs.txt", ".offload/synced.json", ""])
def test_paths_outside_the_project_are_refused(agent, tmp_path, path):
    project_dir = Path(start_apply(agent, tmp_path / "host", tmp_path / "proj", []))
    put_file(agent, path, b"evil\n")
    agent.send("end")
    with pytest.raises(RemoteError) as raised:
        agent.recv()
    assert raised.value.code == "bad_request"
    assert "refusing path outside the project" in raised.value.message
    assert not (tmp_path / "host" / "outside.txt").exists() and not Path("/tmp/abs.txt").exists()
    assert offload_files(project_dir) == ["synced.json"]
    assert synced_paths(str(project_dir), agent) == []


def test_shell_noise_around_messages_is_skipped_even_without_a_newline(tmp_path):
    read_end, write_end = os.pipe()
    with open(write_end, "wb") as writer:
        writer.write(b"Welcome to the box!\n\n" + b"printf without newline" + protocol.encode("hello", n=1)
                     + b"\x1b[31mcolour\x1b[0m\n" + protocol.encode("done"))
    noise = []
    with open(read_end, "rb") as reader:
        assert protocol.read_message(reader, noise=noise.append) == {"t": "hello", "n": 1}
        assert protocol.read_message(reader, noise=noise.append) == {"t": "done"}
        assert protocol.read_message(reader, noise=noise.append) is None
    assert noise == [b"Welcome to the box!\n", b"\n", b"printf without newline", b"\x1b[31mcolour\x1b[0m\n"]


def test_sha_of_what_arrives_matches_for_every_chunk_boundary(agent, tmp_path):
    project_dir = Path(start_apply(agent, tmp_path / "host", tmp_path / "proj", []))
    sizes = [0, 1, protocol.CHUNK - 1, protocol.CHUNK, protocol.CHUNK + 1, 2 * protocol.CHUNK]
    blobs = {f"f{size}.bin": os.urandom(size) for size in sizes}
    for name, data in blobs.items():
        put_file(agent, name, data)
    agent.send("end")
    assert agent.recv()["written"] == len(sizes)
    for name, data in blobs.items():
        assert hashlib.sha256((project_dir / name).read_bytes()).digest() == hashlib.sha256(data).digest()
