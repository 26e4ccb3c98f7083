"""Durable commits, through the real sshd: strace watches a real agent sync and shows each file's bytes synced
before its rename and its directory synced before synced.json names it; and a patch journal or marker cut
short or garbled is an unfinished patch (the file is left as it was, then sent whole), never a crashed agent.

A power cut itself cannot be staged here; the order of the syncs and renames that make one survivable can."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import register_host, run_offload
from sshd_server import descendants, wait_for

from offload.sync.blocks import plan_delta
from offload.sync.push import project_dir_name, sync_project
from remote_agent import durable, journals, patching, sidecars
from remote_agent.fence import Fence

from test_sync_delta import Project, journal_left_by_a_killed_agent, leftovers, patch_message

MiB = 1 << 20
REPO_ROOT = Path(__file__).resolve().parent.parent
STRACE_ATTACH_S = 10
SYNCS = ("fsync", "fdatasync", "syncfs")
RENAMES = ("rename", "renameat", "renameat2")


class Trace:
    """strace -f attached to a running agent: each syscall's name, its fd's path (-y) or its path arguments,
    listed in the order they finished."""

    def __init__(self, pid: int, log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-y", "-o", str(log), "-p", str(pid),
             "-e", "trace=" + ",".join(SYNCS + RENAMES + ("openat",))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert wait_for(lambda: self.tracer_of(pid) == self.proc.pid, STRACE_ATTACH_S), "strace did not attach"

    @staticmethod
    def tracer_of(pid: int) -> int:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"^TracerPid:\s+(\d+)", status, re.M).group(1))

    def stop(self) -> list:
        """Detach and return the events: (syscall, [paths]) in the order they completed."""
        self.proc.send_signal(signal.SIGINT)  # strace detaches from the agent, which serves on
        self.proc.wait(timeout=STRACE_ATTACH_S)
        events, unfinished = [], {}
        for line in self.log.read_text().splitlines():
            pid, _, rest = line.partition(" ")
            rest = rest.strip()
            if rest.endswith("<unfinished ...>"):
                unfinished[pid] = rest[: -len("<unfinished ...>")]
                continue
            resumed = re.match(r"<\.\.\. (\w+) resumed>(.*)", rest)
            if resumed:
                rest = unfinished.pop(pid, resumed.group(1) + "(") + resumed.group(2)
            match = re.match(r"(\w+)\((.*)", rest)
            if match:
                name, arguments = match.groups()
                # a path argument, or an fd's path; not the working directory renameat2 names (AT_FDCWD</...>)
                events.append((name, re.findall(r'"([^"]*)"|(?<!AT_FDCWD)<([^>]*)>', arguments)))
        return [(name, [quoted or fd_path for quoted, fd_path in found]) for name, found in events]


def index_of(events: list, predicate, after: int = -1) -> int:
    return next((i for i, event in enumerate(events) if i > after and predicate(*event)), -1)


def assert_durable_order(events: list, host_dir: Path, relpaths: list) -> None:
    """For each file: created under its part name, then synced (an fsync of it, or a syncfs), then renamed;
    then its directory synced (an fsync of it, or a syncfs) before synced.json's rename; and synced.json's
    own bytes synced before its rename, and its directory after."""
    state = str(host_dir / ".offload" / "synced.json")
    state_renamed = index_of(events, lambda name, paths: name in RENAMES and paths[-1:] == [state])
    assert state_renamed >= 0, "synced.json was never renamed into place"
    for relpath in relpaths:
        final = host_dir / relpath
        part = str(final.parent / f".{final.name}.offload-part")
        created = index_of(events, lambda name, paths: name == "openat" and part in paths)
        renamed = index_of(events, lambda name, paths: name in RENAMES and paths[-2:] == [part, str(final)])
        assert 0 <= created < renamed, f"{relpath}: no part file renamed into place"
        synced = index_of(events, lambda name, paths: name == "syncfs" or (name in SYNCS and part in paths), created)
        assert created < synced < renamed, f"{relpath}: renamed before its bytes were synced"
        directory = index_of(events, lambda name, paths: name == "syncfs" or (
            name in SYNCS and str(final.parent) in paths), renamed)
        assert renamed < directory < state_renamed, f"{relpath}: synced.json named it before its directory was synced"
    state_synced = index_of(events, lambda name, paths: name in SYNCS and any(
        p.startswith(state + ".") for p in paths))
    assert 0 <= state_synced < state_renamed, "synced.json renamed before its bytes were synced"
    assert index_of(events, lambda name, paths: name in SYNCS and str(host_dir / ".offload") in paths,
                    state_renamed) > state_renamed, "synced.json's directory never synced after its rename"


def test_every_file_is_synced_before_its_rename_and_its_directory_before_synced_json(link, tmp_path):
    agent, workdir = link
    root = tmp_path / "proj"
    rng = random.Random(7)
    names = [f"d{i % 2}/f{i:02d}.bin" for i in range(40)]  # a batch big enough for one syncfs
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(rng.randbytes(rng.randint(1, 8192)))
    host_dir = Path(workdir) / project_dir_name(root)
    trace = Trace(agent.hello["pid"], tmp_path / "strace.log")
    try:
        assert sync_project(agent, root, workdir, out=io.StringIO()).sent_files == 40
        agent.request("ping")  # the records are saved right after the reply: answered after that
        (root / names[3]).write_bytes(b"changed")  # a batch of two: an fsync each
        (root / names[4]).write_bytes(b"changed too")
        first = trace.stop()
    finally:
        if trace.proc.poll() is None:
            trace.proc.kill()
    assert_durable_order(first, host_dir, names)

    trace = Trace(agent.hello["pid"], tmp_path / "strace2.log")
    try:
        assert sync_project(agent, root, workdir, out=io.StringIO()).sent_files == 2
        agent.request("ping")
        second = trace.stop()
    finally:
        if trace.proc.poll() is None:
            trace.proc.kill()
    assert not any(name == "syncfs" for name, _ in second)  # two files: their own fsyncs, nothing else waited for
    assert_durable_order(second, host_dir, names[3:5])
    for name in names:
        assert (host_dir / name).read_bytes() == (root / name).read_bytes()


def agent_pids(server) -> list:
    return [proc.pid for proc in descendants(server.pid) if proc.comm.startswith("python")
            and b"remote_agent" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_version(root: Path, names: list, rng: random.Random) -> dict:
    """New content for every file (sizes differ between versions); {name: sha256}."""
    versions = {}
    for name in names:
        data = rng.randbytes(rng.randint(1, 8192))
        (root / name).write_bytes(data)
        versions[name] = digest(data)
    return versions


@pytest.mark.parametrize("victim", ["agent", "laptop"])
def test_a_sync_of_many_files_killed_at_random_points_leaves_each_file_old_or_new_and_whole(
        offload_home, fresh_sshd, tmp_path, victim):
    """Renames go a batch at a time; a kill -9 of the agent (nothing can clean up) or of the laptop (the
    agent commits what arrived whole) between or inside batches never leaves a file half-written, or
    synced.json naming a file that is not there."""
    host = register_host(offload_home, fresh_sshd)
    rng = random.Random(victim)
    root = tmp_path / "proj"
    names = [f"d{i % 6}/f{i:04d}.bin" for i in range(1200)]  # several batches of 256
    for directory in {name.split("/")[0] for name in names}:
        (root / directory).mkdir(parents=True)
    write_version(root, names, rng)
    host_dir = Path(host["workdir"]) / project_dir_name(root)
    assert run_offload("sync", "--project", str(root)).returncode == 0
    old = write_version(root, names, rng)
    started = time.monotonic()
    assert run_offload("sync", "--project", str(root)).returncode == 0  # through the link keeper, as those below
    sync_s = time.monotonic() - started
    arriving = lambda: any(host_dir.rglob("*.offload-part"))  # noqa: E731 - files received, not yet renamed
    kills_mid_sync = 0
    for attempt in range(3):
        new = write_version(root, names, rng)
        proc = subprocess.Popen([sys.executable, "-m", "offload", "sync", "--project", str(root)], cwd=REPO_ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if attempt:  # any moment: before, between or inside batches, or after
                time.sleep(rng.uniform(0.1, sync_s))
            else:  # while files arrive: a kill only before or after the sync would prove nothing
                assert wait_for(lambda: arriving() or proc.poll() is not None, 60)
                time.sleep(rng.uniform(0, 0.05))
            for pid in agent_pids(fresh_sshd) if victim == "agent" else [proc.pid]:
                os.kill(pid, signal.SIGKILL)
            kills_mid_sync += proc.poll() is None and arriving()  # parts left unrenamed: cut off mid-sync
        finally:
            if proc.poll() is None and victim == "laptop":
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        assert run_offload("hosts", "disconnect").returncode == 0  # the keeper's link, if the sync had finished
        assert wait_for(lambda: not agent_pids(fresh_sshd), 10), "the agent outlived its link"
        for name in names:
            assert digest((host_dir / name).read_bytes()) in (old[name], new[name]), f"attempt {attempt}: {name}"
        synced = json.loads((host_dir / ".offload" / "synced.json").read_text())["paths"]
        assert all((host_dir / name).is_file() for name in synced if name.endswith(".bin"))
        result = run_offload("sync", "--project", str(root))
        assert result.returncode == 0, result.stderr
        for name in names:
            assert digest((host_dir / name).read_bytes()) == new[name]
        assert not list(host_dir.rglob("*.offload-part")), f"attempt {attempt}: a part file stayed"
        old = new
    print(f"\n{kills_mid_sync} of 3 kills landed mid-sync")
    assert kills_mid_sync >= 1, "no kill landed while files were arriving"


# --- journals and markers that are not whole ---------------------------------------------------------------

def zero_length(journal: Path, marker: Path) -> None:
    journal.write_bytes(b"")


def header_cut(journal: Path, marker: Path) -> None:
    os.truncate(journal, 20)


def data_cut(journal: Path, marker: Path) -> None:
    os.truncate(journal, journal.stat().st_size - 1000)  # the header is whole; some blocks are missing


def garbage_header(journal: Path, marker: Path) -> None:
    data = journal.read_bytes()
    journal.write_bytes(b"[1, 2]\n" + data[data.index(b"\n") + 1:])


def unreadable(journal: Path, marker: Path) -> None:
    journal.unlink()
    journal.mkdir()  # open() fails, as for a journal on a bad sector; root reads past any chmod


def garbage_marker(journal: Path, marker: Path) -> None:
    marker.write_bytes(os.urandom(40))


def empty_marker(journal: Path, marker: Path) -> None:
    marker.write_bytes(b"")


@pytest.mark.parametrize("damage", [zero_length, header_cut, data_cut, garbage_header, unreadable, garbage_marker,
                                    empty_marker])
def test_a_journal_or_marker_that_is_not_whole_leaves_the_file_as_it_was_and_the_next_sync_sends_it_whole(
        link, tmp_path, damage):
    project = Project(tmp_path / "proj", link, 16 * MiB)
    project.sync()
    project_dir, old, new, journal, marker = journal_left_by_a_killed_agent(project)
    damage(journal, marker)

    journals.recover(project_dir, Fence(project_dir))  # what the next manifest does first: it must not apply a part of the patch

    assert project.host_file.read_bytes() == old
    assert not os.listdir(Path(project_dir) / ".offload" / "patching")
    if damage is unreadable:  # not a file the agent wrote: it stays, and nothing else does
        assert leftovers(project.host_file.parent) == [str(journal)]
        Path(journal).rmdir()
    if damage not in (garbage_marker, empty_marker):  # a marker that names no file cannot say whose journal it was
        assert leftovers(project.host_file.parent) == []
        assert sidecars.stored_digests(project_dir, [("train.bin", str(project.host_file))]) == ([], b"")  # so the file goes whole
        result = project.sync()
        assert result.sent_files == 1 and result.sent_bytes >= 16 * MiB
    else:
        project.sync()  # the old sidecar still matches the untouched file: a patch, whose journal replaces the stray
    assert project.host_file.read_bytes() == new
    assert leftovers(project.host_file.parent) == []
    project.overwrite(0, 10)
    project.sync()
    assert project.host_file.read_bytes() == project.local.read_bytes()


def test_a_journal_cut_short_found_by_a_manifest_is_no_error_and_the_sync_completes(link, tmp_path):
    """The same through the agent alone: its manifest meets the cut journal, answers, and serves on."""
    project = Project(tmp_path / "proj", link, 16 * MiB)
    project.sync()
    project_dir = str(project.host_file.parent)
    project.overwrite(MiB, MiB)
    message, blob = patch_message(plan_delta(project.local, sidecars.stored_digests(project_dir, [("train.bin", str(project.host_file))])[1]),
                                  project.local.read_bytes())
    part = patching.write_journal(project_dir, "train.bin", str(project.host_file), message, io.BytesIO(blob).read)
    journal, _ = journals.commit_journal(project_dir, "train.bin", part, str(project.host_file))
    os.truncate(journal, os.path.getsize(journal) // 2)

    result = project.sync()

    assert result.sent_files == 1
    assert project.host_file.read_bytes() == project.local.read_bytes()
    assert leftovers(project.host_file.parent) == []
    assert project.agent.request("ping")["t"] == "pong"


@pytest.mark.parametrize("atomic", [True, False], ids=["renameat2", "checked-rename"])
def test_a_rename_to_a_new_name_never_replaces_what_stands_there(tmp_path, monkeypatch, atomic):
    """rename_new, with the kernel's RENAME_NOREPLACE and with the check a filesystem without it gets."""
    if not atomic:
        monkeypatch.setitem(durable._calls, "renameat2", None)
    else:
        assert durable.libc_call("renameat2") is not None  # glibc 2.28 and later: CI's has it
    part, final = tmp_path / "part", tmp_path / "final"
    part.write_text("new")
    assert durable.rename_new(str(part), str(final)) and final.read_text() == "new" and not part.exists()
    part.write_text("newer")
    assert not durable.rename_new(str(part), str(final))
    assert final.read_text() == "new" and part.read_text() == "newer"
    final.unlink()
    final.symlink_to("nowhere")  # a dangling link is something too
    assert not durable.rename_new(str(part), str(final)) and final.is_symlink()
