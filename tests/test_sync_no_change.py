"""A no-change sync does no work that grows with the tree, and still misses nothing: the agent says
`manifest_same` only while its inotify watch saw no change (tree_watch.py), and a host file deleted,
rewritten, replaced or re-moded behind offload's back after that is seen by the very next sync, as a fresh
agent would see it. Real sshd, real inotify."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_sync import host_project_dir, tree, write

from offload.sync import push, scan_cache
from offload.sync.push import sync_project
from remote_agent import tree_watch
from remote_agent.tree_watch import TreeWatch


@pytest.fixture
def replies(monkeypatch):
    """Every `prepared` reply the syncs get, as the agent sent it (the real completed() still runs)."""
    seen = []
    real = push.completed

    def recording(agent, key, reply):
        seen.append(reply)
        return real(agent, key, reply)

    monkeypatch.setattr(push, "completed", recording)
    monkeypatch.setattr(scan_cache, "RACY_NS", 0)  # the files are seconds old at most
    scan_cache.forget_all()
    yield seen
    scan_cache.forget_all()


def files_of(root: Path) -> dict:
    """tree(root) without offload's own records on the host."""
    return tree(root, skip=(".offload",))


def make_tree(root: Path) -> None:
    for index in range(30):
        write(root / f"d{index % 3}" / f"f{index}.py", f"x = {index}\n")
    write(root / "train.py", "print('train')\n")
    (root / "empty").mkdir()


def settle(agent, root: Path, workdir: str, replies: list) -> None:
    """Sync until the agent answers manifest_same (the second sync after a change)."""
    for _ in range(3):
        sync_project(agent, root, workdir, out=io.StringIO())
    assert "manifest_same" in replies[-1]


def test_a_no_change_sync_gets_manifest_same_and_reuses_its_plan(link, tmp_path, replies):
    agent, workdir = link
    root = tmp_path / "proj"
    make_tree(root)
    assert sync_project(agent, root, workdir, out=io.StringIO()).sent_files == 32
    second = sync_project(agent, root, workdir, out=io.StringIO())
    assert "present" in replies[-1]  # the files just written: a manifest built and sent
    out = io.StringIO()
    third = sync_project(agent, root, workdir, out=out)
    assert replies[-1].keys() >= {"manifest_same"} and "present" not in replies[-1]
    assert (second.sent_files, third.sent_files, third.unchanged) == (0, 0, 32)
    assert "is up to date (32 files)" in out.getvalue()
    write(root / "d1" / "f1.py", "x = 'edited on the laptop'\n")
    assert sync_project(agent, root, workdir, out=io.StringIO()).sent_files == 1
    assert files_of(host_project_dir(workdir, root)) == files_of(root)


def delete_file(host: Path) -> None:
    (host / "d0" / "f0.py").unlink()


def rewrite_longer(host: Path) -> None:
    (host / "d1" / "f1.py").write_text("x = 'changed on the host'\n")


def replace_by_rename(host: Path) -> None:
    write(host / "tmp.py", "y = 2\n")
    os.replace(host / "tmp.py", host / "d2" / "f2.py")


def chmod_file(host: Path) -> None:
    (host / "train.py").chmod(0o700)


def remove_dir(host: Path) -> None:
    shutil.rmtree(host / "d0")


def file_into_empty_dir(host: Path) -> None:
    write(host / "empty" / "new.txt", "made on the host\n")


# What a sync after each must do: the laptop's file back, or the host's change kept and said.
CHANGES = {
    "deleted": (delete_file, "restored"),
    "rewritten": (rewrite_longer, "kept"),
    "replaced by a rename": (replace_by_rename, "kept"),
    "re-moded": (chmod_file, "restored"),
    "directory removed": (remove_dir, "restored"),
    "file added in a synced empty dir": (file_into_empty_dir, "restored"),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_host_change_after_manifest_same_is_seen_by_the_next_sync(link, tmp_path, replies, change):
    agent, workdir = link
    root = tmp_path / "proj"
    make_tree(root)
    settle(agent, root, workdir, replies)
    host = host_project_dir(workdir, root)
    edit, outcome = CHANGES[change]
    edit(host)
    out = io.StringIO()
    result = sync_project(agent, root, workdir, out=out)
    assert "manifest_same" not in replies[-1]
    laptop, there = files_of(root), files_of(host)
    if outcome == "restored":
        assert {path: there[path] for path in laptop} == laptop
        assert result.sent_files >= 1 or change == "file added in a synced empty dir"
    else:
        assert "changed on the host" in out.getvalue()
        assert there != laptop  # the host's file is left alone, as without the watch
        sync_project(agent, root, workdir, out=io.StringIO(), force=True)
        assert files_of(host) == laptop


def test_the_watch_sees_each_kind_of_change_and_ignores_the_agents_own_dir(tmp_path):
    root = tmp_path / "p"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    (root / ".offload").mkdir()
    for change in (lambda: (root / "a" / "b" / "f").write_text("y"),
                   lambda: (root / "a" / "b" / "f").chmod(0o600),
                   lambda: (root / "a" / "new").write_text("n"),
                   lambda: (root / "a" / "b" / "f").unlink(),
                   lambda: (root / "a" / "b").rename(root / "a" / "c")):
        watch = TreeWatch.start(str(root), {str(root / "a"), str(root / "a" / "b")})
        assert watch is not None and watch.quiet()
        (root / ".offload" / "synced.json").write_text("{}")  # the agent's own records: no change to the tree
        (root / ".offload" / "synced.json").unlink()
        assert watch.quiet()
        change()
        assert not watch.quiet() and not watch.quiet()  # and stays changed
        watch.close()
        shutil.rmtree(root / "a")
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "b" / "f").write_text("x")


def test_an_overflowed_queue_counts_as_a_change(tmp_path):
    """Past max_queued_events the kernel drops events and says only that it did: a change, always."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    root = tmp_path / "p"
    root.mkdir()
    watch = TreeWatch.start(str(root), ())
    names = [f"n{index}" for index in range(limit + 10)]
    # A child process makes the events: nothing reads the queue meanwhile; .offload is not watched as a
    # change, so only the overflow can say what happened (each create inside it raises no event at all).
    script = ("import os, sys\nroot = sys.argv[1]\nfor name in sys.argv[2:]:\n"
              "    os.mkdir(os.path.join(root, '.offload'))\n    os.rmdir(os.path.join(root, '.offload'))\n")
    subprocess.run([sys.executable, "-c", script, str(root), *names[: (limit // 2) + 10]], check=True, timeout=120)
    assert not watch.quiet()
    watch.close()


def test_no_watch_where_inotify_cannot_see_every_change(tmp_path, monkeypatch):
    assert tree_watch.filesystem_of("/proc/self") == "proc"
    assert TreeWatch.start("/proc/self", ()) is None  # not a local disk filesystem: the manifest is built each time
    monkeypatch.setattr(tree_watch, "MAX_DIRS", 1)
    assert TreeWatch.start(str(tmp_path), {str(tmp_path / "x")}) is None
