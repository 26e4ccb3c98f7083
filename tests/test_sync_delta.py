"""Block-level delta for big changed files, through the real sshd: only the changed blocks travel, the host
patches its file in place when nothing has it open and patches a copy when something does, a stale sidecar
means a whole-file send, a journal a killed agent left is redone, and a killed laptop or a file that changes
while it is sent never leaves a mix of versions. The host's workdir is a local path, so it is read directly."""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import register_host, run_offload
from sshd_server import wait_for

from offload.sync.blocks import plan_delta
from offload.errors import OffloadError
from offload.sync.push import project_dir_name, sync_project
from remote_agent import journals, patching, sidecars
from remote_agent.protocol import BLOCK, PART_SUFFIX

MiB = 1 << 20
REPO_ROOT = Path(__file__).resolve().parent.parent


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(host_dir: Path) -> list:
    """Temporary files of a sync or a patch still under the project (none may outlive one)."""
    return sorted(str(p) for p in host_dir.rglob("*") if p.name.endswith((".offload-part", ".offload-patch")))


class Project:
    """A project with one big file, synced through `link`; host_file is the host's copy of it on disk."""

    def __init__(self, root: Path, link, size: int):
        self.root, (self.agent, self.workdir) = root, link
        root.mkdir()
        self.local = root / "train.bin"
        self.rng = random.Random(size)
        self.local.write_bytes(self.rng.randbytes(size))
        self.host_file = Path(self.workdir) / project_dir_name(root) / "train.bin"

    def sync(self, force: bool = False):
        self.said = io.StringIO()
        return sync_project(self.agent, self.root, self.workdir, out=self.said, force=force)

    def overwrite(self, offset: int, length: int) -> None:
        with open(self.local, "r+b") as f:
            f.seek(offset)
            f.write(self.rng.randbytes(length))


def test_a_middle_edit_sends_only_the_changed_blocks_and_patches_in_place(link, tmp_path):
    project = Project(tmp_path / "proj", link, 24 * MiB)
    first = project.sync()
    assert first.sent_bytes >= 24 * MiB
    inode = project.host_file.stat().st_ino

    project.overwrite(12 * MiB - 100_000, MiB)  # 1 MiB straddling block edges: 5 blocks of 256 KiB
    second = project.sync()

    assert second.sent_files == 1
    assert second.sent_bytes <= 1.25 * MiB + 1000  # 5 blocks, their digests and a status byte
    assert project.host_file.read_bytes() == project.local.read_bytes()
    host, local = project.host_file.stat(), project.local.stat()
    assert host.st_ino == inode  # patched in place
    assert (host.st_mtime_ns, host.st_mode & 0o777) == (local.st_mtime_ns, local.st_mode & 0o777)
    assert leftovers(project.host_file.parent) == []
    assert project.sync().sent_files == 0  # the quick check says up to date


def test_the_cli_says_how_much_goes_by_delta(box, tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "big.bin").write_bytes(random.Random(1).randbytes(16 * MiB))
    assert run_offload("sync", "--project", str(root)).returncode == 0
    with open(root / "big.bin", "r+b") as f:
        f.seek(4 * MiB)
        f.write(b"x" * MiB)

    result = run_offload("sync", "--project", str(root))

    assert result.returncode == 0, result.stderr
    host_dir = Path(box["workdir"]) / project_dir_name(root)
    assert result.stderr.splitlines()[0] == (f"sync: 1 file, 16.8 MB; largest: big.bin (16.8 MB); 1 by delta "
                                             f"(4 of 64 blocks): 1.0 MB to send -> box:{host_dir}")
    assert (host_dir / "big.bin").read_bytes() == (root / "big.bin").read_bytes()


def test_an_append_and_a_truncation_send_only_new_or_changed_blocks(link, tmp_path):
    project = Project(tmp_path / "proj", link, 16 * MiB + 1000)  # a short last block
    project.sync()
    inode = project.host_file.stat().st_ino

    with open(project.local, "ab") as f:
        f.write(project.rng.randbytes(3 * MiB))
    appended = project.sync()
    # The old short last block, now whole, and 12 new blocks.
    assert appended.sent_bytes <= 3 * MiB + BLOCK + 1000
    assert project.host_file.read_bytes() == project.local.read_bytes()

    os.truncate(project.local, 10 * MiB)  # a block edge: nothing to send but the new size
    truncated = project.sync()
    assert truncated.sent_files == 1 and truncated.sent_bytes <= 100
    assert project.host_file.read_bytes() == project.local.read_bytes()
    os.truncate(project.local, 9 * MiB + 5)  # mid-block: that block travels
    assert project.sync().sent_bytes <= BLOCK + 100
    assert project.host_file.read_bytes() == project.local.read_bytes()
    assert project.host_file.stat().st_ino == inode
    assert leftovers(project.host_file.parent) == []


def test_a_host_file_changed_behind_offloads_back_is_kept_and_with_force_sent_whole(link, tmp_path):
    project = Project(tmp_path / "proj", link, 16 * MiB)
    project.sync()
    with open(project.host_file, "r+b") as f:  # same size, other bytes, a touched mtime: the sidecar is stale
        f.seek(5 * MiB)
        f.write(b"\0" * MiB)
    stamp = project.host_file.stat().st_mtime_ns + 1_000_000_000
    os.utime(project.host_file, ns=(stamp, stamp))
    changed_on_host = project.host_file.read_bytes()
    project.overwrite(MiB, 1000)

    kept = project.sync()

    assert kept.sent_bytes == 0 and project.host_file.read_bytes() == changed_on_host
    assert "kept train.bin on box: changed on the host since it was synced (--force replaces it)" in project.said.getvalue()
    again = project.sync(force=True)
    assert "replacing train.bin on box: changed on the host since it was synced (--force)" in project.said.getvalue()
    assert again.sent_bytes >= 16 * MiB  # whole: the host's digests no longer describe its file
    assert project.host_file.read_bytes() == project.local.read_bytes()
    project.overwrite(MiB, 1000)
    assert project.sync().sent_bytes <= BLOCK + 100  # the whole send stored fresh digests
    assert project.host_file.read_bytes() == project.local.read_bytes()


def test_a_file_a_process_has_open_or_mapped_is_patched_on_a_copy_it_never_sees(link, tmp_path):
    project = Project(tmp_path / "proj", link, 16 * MiB)
    project.sync()
    old = project.host_file.read_bytes()
    held = open(project.host_file, "rb")  # as a running job holds train.bin
    try:
        old_inode = os.fstat(held.fileno()).st_ino
        project.overwrite(8 * MiB, MiB)
        assert project.sync().sent_bytes <= 1.25 * MiB
        assert os.pread(held.fileno(), 16 * MiB, 0) == old  # the holder still reads the old file, whole
    finally:
        held.close()
    assert project.host_file.read_bytes() == project.local.read_bytes()
    assert project.host_file.stat().st_ino != old_inode

    # Mapped, its descriptor closed (nanoGPT's np.memmap): /proc/PID/maps alone shows it.
    with open(project.host_file, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        before, mapped_inode = mapped[:], project.host_file.stat().st_ino
        project.overwrite(0, 1000)
        assert project.sync().sent_bytes <= BLOCK + 100
        assert mapped[:] == before
    finally:
        mapped.close()
    assert project.host_file.read_bytes() == project.local.read_bytes()
    assert project.host_file.stat().st_ino != mapped_inode
    assert leftovers(project.host_file.parent) == []


def journal_left_by_a_killed_agent(project: Project, tail: bytes = b"") -> tuple:
    """Edit the laptop's file, then take the agent's own steps up to the moment the patch's blocks would be
    written, and stop there as a killed agent would: (project_dir, the host's old bytes, the laptop's new
    bytes, the journal, its marker)."""
    project_dir = str(project.host_file.parent)
    old = project.host_file.read_bytes()
    project.overwrite(3 * MiB + 7, 2 * MiB)
    project.overwrite(15 * MiB, 10)
    with open(project.local, "ab") as f:
        f.write(tail)
    new = project.local.read_bytes()
    host_digests = sidecars.stored_digests(project_dir, [("train.bin", str(project.host_file))])[1]
    message, blob = patch_message(plan_delta(project.local, host_digests), new)
    stream = io.BytesIO(blob)
    part = patching.write_journal(project_dir, "train.bin", str(project.host_file), message, stream.read)
    journal, marker = journals.commit_journal(project_dir, "train.bin", part, str(project.host_file))
    return project_dir, old, new, Path(journal), Path(marker)


def test_a_journal_left_by_a_killed_agent_is_redone_by_the_next_manifest(link, tmp_path):
    project = Project(tmp_path / "proj", link, 16 * MiB)
    project.sync()
    project_dir, old, new, journal, _ = journal_left_by_a_killed_agent(project, tail=b"tail")
    assert journal.exists() and project.host_file.read_bytes() == old

    result = project.sync()  # its manifest applies the journal first: then nothing is left to send

    assert result.sent_files == 0 and result.unchanged == 1
    assert project.host_file.read_bytes() == new
    assert leftovers(project.host_file.parent) == []
    assert not os.listdir(Path(project_dir) / ".offload" / "patching")
    project.overwrite(0, 10)
    assert project.sync().sent_bytes <= BLOCK + 100  # the redo left digests that match the file
    assert project.host_file.read_bytes() == project.local.read_bytes()


def patch_message(delta, content: bytes) -> tuple:
    """The `patch` message and blob offload.sync.send_patch would send for delta, as module-level data."""
    from offload.sync.blocks import as_ranges, block_length

    digests = b"".join(delta.digests[i * 16:(i + 1) * 16] for i in delta.changed)
    data = b"".join(content[i * BLOCK:i * BLOCK + block_length(i, delta.size)] for i in delta.changed)
    message = {"path": "train.bin", "mode": 0o644, "mtime_ns": delta.mtime_ns, "file_size": delta.size,
               "ranges": as_ranges(delta.changed), "size": delta.wire_bytes}
    return message, digests + data + b"\1"


def poll_until(condition, timeout_s: float) -> bool:
    """wait_for at 1 ms: a patch of a few MiB arrives in tens of milliseconds on loopback."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


def test_a_client_killed_during_delta_syncs_leaves_the_old_or_the_new_file_whole(offload_home, fresh_sshd, tmp_path):
    host = register_host(offload_home, fresh_sshd)
    rng = random.Random(20261123)
    root = tmp_path / "proj"
    root.mkdir()
    local = root / "train.bin"
    local.write_bytes(rng.randbytes(24 * MiB))
    host_file = Path(host["workdir"]) / project_dir_name(root) / "train.bin"
    arriving_patch = host_file.with_name(f".train.bin{PART_SUFFIX}")  # the journal, while its blocks come
    assert run_offload("sync", "--project", str(root)).returncode == 0
    started = time.monotonic()
    with open(local, "r+b") as f:
        f.seek(MiB)
        f.write(rng.randbytes(MiB))
    assert run_offload("sync", "--project", str(root)).returncode == 0
    delta_sync_s = time.monotonic() - started
    kills_mid_patch = 0
    for attempt in range(4):
        old = sha256(host_file.read_bytes())
        with open(local, "r+b") as f:
            for _ in range(3):
                f.seek(rng.randrange(24 * MiB))
                f.write(rng.randbytes(rng.randint(1, 2 * MiB)))
        new = sha256(local.read_bytes())
        proc = subprocess.Popen([sys.executable, "-m", "offload", "sync", "--project", str(root)], cwd=REPO_ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if attempt % 2:  # any moment of the sync: before, during or after its patch
                time.sleep(rng.uniform(0.1, delta_sync_s))
            else:  # while the patch arrives: a kill only before or after it would prove nothing
                assert poll_until(lambda: arriving_patch.exists() or proc.poll() is not None, 60)
                time.sleep(rng.uniform(0, 0.002))
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills_mid_patch += arriving_patch.exists()  # still arriving after the kill: cut off mid-patch
            proc.wait(timeout=10)
        assert wait_for(lambda: leftovers(host_file.parent) == [], 10), f"attempt {attempt}: a temporary file stayed"
        assert sha256(host_file.read_bytes()) in (old, new), f"attempt {attempt}: a mix of versions"
        result = run_offload("sync", "--project", str(root))
        assert result.returncode == 0, result.stderr
        assert sha256(host_file.read_bytes()) == new
    print(f"\n{kills_mid_patch} of 4 kills landed mid-patch")
    assert kills_mid_patch >= 1, "no kill landed while a patch was arriving"


def test_a_file_that_changes_while_it_is_hashed_or_sent_is_resent_or_reported_never_synced_wrong(link, tmp_path):
    project = Project(tmp_path / "proj", link, 24 * MiB)
    project.sync()
    old = project.host_file.read_bytes()
    project.overwrite(10 * MiB, MiB)
    done, appended = threading.Event(), []

    def append_until_done() -> None:  # every version the file has is a prefix of the last one
        while not done.is_set():
            with open(project.local, "ab") as f:
                f.write(os.urandom(4096))
            appended.append(4096)
            time.sleep(0.002)

    writer = threading.Thread(target=append_until_done)
    writer.start()
    try:
        try:
            project.sync()
            reported = None
        except OffloadError as exc:
            reported = exc
    finally:
        done.set()
        writer.join(timeout=30)
    assert not writer.is_alive() and appended
    final = project.local.read_bytes()
    on_host = project.host_file.read_bytes()
    if reported is not None:
        assert reported.message == "train.bin kept changing while it was being sent; it was not synced"
        assert on_host == old  # the patches were marked incomplete: the host kept its file as it was
    else:
        assert final.startswith(on_host) and len(on_host) > 24 * MiB
    assert leftovers(project.host_file.parent) == []
    project.sync()
    assert project.host_file.read_bytes() == final
