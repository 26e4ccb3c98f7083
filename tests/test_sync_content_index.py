"""Content the host already has is never sent again, through the real sshd: a renamed data dir and the same
data in a second project are built on the host from the copies it has, a base changed behind offload's back
never yields wrong content, and `hosts check` says how big the index is. The host's workdir is a local path,
so it is read directly; what the laptop sent is counted at the agent link's write, every byte of it."""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from conftest import run_offload

from offload.sync.push import project_dir_name, sync_project
from remote_agent import sidecars
from remote_agent.protocol import BLOCK

MiB = 1 << 20
DATA_BYTES = 12 * MiB + 9 * MiB + 1234


def make_project(root: Path, seed: int = 1) -> None:
    rng = random.Random(seed)
    (root / "data").mkdir(parents=True)
    (root / "data" / "tokens.bin").write_bytes(rng.randbytes(12 * MiB))
    (root / "data" / "floats.bin").write_bytes(rng.randbytes(9 * MiB + 1234))  # a short last block
    (root / "train.py").write_text("print('train')\n")


def hashes(root: Path) -> dict:
    """relpath -> SHA-256 of every file under root, offload's own `.offload` left out."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and ".offload" not in p.relative_to(root).parts}


def leftovers(root: Path) -> list:
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith((".offload-part", ".offload-patch")))


@contextmanager
def counting(agent):
    """Every byte the laptop writes to the agent meanwhile (messages and blobs): [count]."""
    sent, original = [0], agent.write

    def write(data: bytes, flush: bool = False) -> None:
        sent[0] += len(data)
        original(data, flush)
    agent.write = write
    try:
        yield sent
    finally:
        del agent.write


def sync(agent, root: Path, workdir: str):
    return sync_project(agent, root, workdir, out=io.StringIO())


def test_a_renamed_data_dir_is_built_from_the_copy_the_host_has(link, tmp_path):
    agent, workdir = link
    root = tmp_path / "proj"
    make_project(root)
    sync(agent, root, workdir)
    host = Path(workdir) / project_dir_name(root)
    os.rename(root / "data", root / "data2")

    with counting(agent) as sent:
        result = sync(agent, root, workdir)

    assert hashes(host) == hashes(root)  # data2 byte for byte, data gone
    assert not (host / "data").exists()
    assert result.sent_files == 2 and result.deleted == 2
    assert sent[0] < 0.01 * DATA_BYTES, sent[0]
    assert leftovers(host) == []
    with open(root / "data2" / "tokens.bin", "r+b") as f:  # the new paths have digests: an edit goes by delta
        f.seek(5 * BLOCK + 7)
        f.write(b"edited")
    with counting(agent) as sent:
        sync(agent, root, workdir)
    assert sent[0] < BLOCK + 20_000, sent[0]
    assert hashes(host) == hashes(root)


def test_the_same_data_in_a_second_project_is_not_sent_again(link, tmp_path):
    agent, workdir = link
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    for root in (first, second, third):
        make_project(root)
    (second / "train.py").write_text("print('another project')\n")
    with open(third / "data" / "tokens.bin", "r+b") as f:  # most of its blocks, not all
        f.seek(3 * MiB + 10)
        f.write(random.Random(2).randbytes(100_000))
    sync(agent, first, workdir)

    with counting(agent) as sent:
        sync(agent, second, workdir)
    assert sent[0] < 0.01 * DATA_BYTES, sent[0]
    with counting(agent) as sent:
        sync(agent, third, workdir)
    assert sent[0] < BLOCK + 0.01 * DATA_BYTES, sent[0]  # the one block that differs, and the rest as before

    for root in (first, second, third):
        host = Path(workdir) / project_dir_name(root)
        assert hashes(host) == hashes(root)
        assert leftovers(host) == []


def test_a_project_deleted_and_cloned_again_sends_almost_nothing(link, tmp_path):
    agent, workdir = link
    root, elsewhere = tmp_path / "proj", tmp_path / "clone elsewhere"
    make_project(root)
    sync(agent, root, workdir)
    shutil.rmtree(root)
    make_project(root)  # the same content, new files with new mtimes: the quick check sends them all
    make_project(elsewhere)  # and the same checkout at another path: another project dir on the host

    for clone in (root, elsewhere):
        with counting(agent) as sent:
            result = sync(agent, clone, workdir)
        assert result.sent_files == 3
        assert sent[0] < 0.01 * DATA_BYTES, sent[0]
        assert hashes(Path(workdir) / project_dir_name(clone)) == hashes(clone)


def test_a_base_changed_behind_offloads_back_never_yields_wrong_content(link, tmp_path):
    agent, workdir = link
    first, second = tmp_path / "first", tmp_path / "second"
    make_project(first)
    make_project(second)
    sync(agent, first, workdir)
    first_host = Path(workdir) / project_dir_name(first)
    base = first_host / "data" / "tokens.bin"
    before = base.stat()
    with open(base, "r+b") as f:  # same size, same inode, mtime put back: the sidecar still matches
        f.seek(BLOCK + 10)
        f.write(b"corrupted on the host")
    os.utime(base, ns=(before.st_atime_ns, before.st_mtime_ns))
    sidecar = first_host / sidecars.BLOCKS_DIR / sidecars.path_key("data/tokens.bin")
    assert sidecar.exists()

    with counting(agent) as sent:
        result = sync(agent, second, workdir)

    second_host = Path(workdir) / project_dir_name(second)
    assert hashes(second_host) == hashes(second)  # the laptop's content, not the corrupted base's
    assert not sidecar.exists()  # the stale entry is dropped: never a base again
    assert sent[0] > 12 * MiB  # tokens.bin went whole; floats.bin, whose base is sound, did not
    assert sent[0] < 12 * MiB + 0.01 * DATA_BYTES, sent[0]
    assert result.sent_files == 3
    assert leftovers(second_host) == []


def index_cell(stdout: str) -> str:
    found = re.search(r"content index\s+(.*)", stdout)
    assert found, stdout
    return found.group(1).strip()


def test_hosts_check_shows_the_index_and_a_removed_project_leaves_nothing_in_it(box, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    make_project(first)
    make_project(second, seed=2)
    for root in (first, second):
        assert run_offload("sync", "--project", str(root)).returncode == 0

    checked = run_offload("hosts", "check", env={"COLUMNS": "80"})
    assert checked.returncode == 0, checked.stderr
    assert index_cell(checked.stdout) == "4 files, 44.0 MB in 2 projects"

    removed = run_offload("hosts", "clean", "box", "--older-than", "0", "--yes")
    assert removed.returncode == 0, removed.stderr
    checked = run_offload("hosts", "check", env={"COLUMNS": "80"})
    assert index_cell(checked.stdout) == "0 files, 0 B in 0 projects"
