"""scan_cache.py: a kept selection is reused only while nothing it was made from changed. Every kind of change a
user makes between two syncs (bytes with the mtime put back, a new file deep down, a rule file, offload.yaml,
.git/info/exclude, a directory turned symlink) yields exactly what a fresh scan finds; so do random edits."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from offload.sync import scan_cache
from remote_agent import tree_watch
from offload.sync.selection import select_files, select_project, selection_lines


@pytest.fixture
def settled(monkeypatch):
    """Scans count as settled at once: the files a test just made would otherwise be racy for 2 s."""
    monkeypatch.setattr(scan_cache, "RACY_NS", 0)
    scan_cache.forget_all()
    yield
    scan_cache.forget_all()


def make_project(root: Path) -> None:
    for relpath, text in {"train.py": "print(1)\n", "model/gpt.py": "x = 1\n", "model/deep/layer.py": "y = 2\n",
                          "data/prepare.py": "z = 3\n", ".gitignore": "*.bin\nout/\nenv/\n",
                          "out/ckpt.pt": "weights", "env/lib.py": "w"}.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "data" / "train.bin").write_bytes(b"\1" * 100)  # git-ignored, beside prepare.py: sent


def fresh(root: Path):
    """What a scan from nothing finds, with offload.yaml read the way select_project reads it."""
    scan_cache.forget_all()
    return select_project(root)


def as_seen(selection) -> tuple:
    return selection.entries, selection.left_out, selection_lines(selection)


def same_bytes_old_mtime(root: Path) -> None:
    path = root / "model" / "gpt.py"
    before = path.stat()
    path.write_text("x = 9\n")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


EDITS = {
    "bytes changed, mtime put back": same_bytes_old_mtime,
    "new file deep down": lambda root: (root / "model" / "deep" / "new.py").write_text("n"),
    "file deleted": lambda root: (root / "model" / "deep" / "layer.py").unlink(),
    "file renamed": lambda root: (root / "train.py").rename(root / "train2.py"),
    "mode changed": lambda root: (root / "train.py").chmod(0o755),
    "rule file edited": lambda root: (root / ".gitignore").write_text("*.bin\nout/\nenv/\nmodel/\n"),
    "nested rule file added": lambda root: (root / "model" / ".offloadignore").write_text("deep/\n"),
    "info/exclude added": lambda root: ((root / ".git" / "info").mkdir(parents=True),
                                        (root / ".git" / "info" / "exclude").write_text("data/\n")),
    "offload.yaml includes out/": lambda root: (root / "offload.yaml").write_text("include: ['out/**']\n"),
    "ignored file grows (reported size)": lambda root: (root / "out" / "ckpt.pt").write_text("more weights"),
    "ignored dir becomes a venv": lambda root: (root / "env" / "pyvenv.cfg").write_text("home = /usr\n"),
    "dir replaced by a symlink": lambda root: (shutil.rmtree(root / "model" / "deep"),
                                              (root / "model" / "deep").symlink_to(root / "data")),
    "beside-rule file added": lambda root: (root / "data" / "val.bin").write_bytes(b"\2" * 10),
}


def no_inotify():
    """As on a network filesystem or macOS: no watch can be had, every reuse is checked path by path."""
    patch = pytest.MonkeyPatch()
    patch.setattr(tree_watch, "LOCAL_FILESYSTEMS", frozenset())
    return patch


WATCHES = ["checked path by path", "under the scan's watch", "under the watch a check path by path set"]


@pytest.mark.parametrize("watched", WATCHES)
@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_every_change_is_seen(tmp_path, settled, edit, watched):
    root = tmp_path / "proj"
    make_project(root)
    unwatched = no_inotify()
    try:
        if watched == WATCHES[2]:
            select_project(root)  # kept without a watch, then checked path by path with inotify back
            assert scan_cache._kept[(str(root.resolve()), ())].watch is None
        if watched != WATCHES[0]:
            unwatched.undo()
        kept = select_project(root)
        assert select_project(root) is kept  # nothing changed: reused, not scanned again
        assert (scan_cache._kept[(str(root.resolve()), ())].watch is not None) == (watched != WATCHES[0])
        EDITS[edit](root)
        after = select_project(root)
    finally:
        unwatched.undo()
    assert after is not kept  # scanned again, even where the new scan finds the same (bytes, mtime put back)
    assert as_seen(after) == as_seen(fresh(root))


@pytest.mark.parametrize("before_listing", [True, False], ids=["before the tree is listed", "after"])
@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_a_change_while_the_scan_runs_is_seen(tmp_path, settled, edit, before_listing):
    """Made after offload.yaml was read (before any watch was set) or after the whole tree was, before the
    selection was kept: the next sync scans again."""
    root = (tmp_path / "proj").resolve()
    make_project(root)
    scan_cache.forget_all()

    def select_while_editing(witness):
        witness.saw_path("offload.yaml")
        if before_listing:
            EDITS[edit](root)
        selection = select_files(root, witness=witness)
        if not before_listing:
            EDITS[edit](root)
        return selection

    kept = scan_cache.cached_selection(root, (), select_while_editing)
    after = select_project(root)
    if before_listing and edit != "offload.yaml includes out/":
        assert as_seen(after) == as_seen(kept)  # the scan listed the tree as edited: its selection holds
    else:
        assert after is not kept
    assert as_seen(after) == as_seen(fresh(root))


def test_info_exclude_rewritten_before_its_watch_is_set_is_seen(tmp_path, settled):
    """.git is never listed: the watch on it is set once the scan is done. .git/info/exclude rewritten in place
    before that (every ctime the scan saw older than its start) is seen only by checking it again then."""
    root = (tmp_path / "proj").resolve()
    make_project(root)
    (root / ".git" / "info").mkdir(parents=True)
    (root / ".git" / "info" / "exclude").write_text("nothing.txt\n")
    scan_cache.forget_all()

    def select_then_edit(witness):
        selection = select_files(root, witness=witness)
        (root / ".git" / "info" / "exclude").write_text("data/\n")
        return selection

    kept = scan_cache.cached_selection(root, (), select_then_edit)
    after = select_project(root)
    assert after is not kept and "data/prepare.py" not in {entry.path for entry in after.entries}


def test_under_the_watch_a_no_change_selection_stats_nothing(tmp_path, settled, monkeypatch):
    root = tmp_path / "proj"
    make_project(root)
    kept = select_project(root)  # watched from the scan on

    def no_stat(self):
        raise AssertionError("checked path by path although the watch saw nothing")

    monkeypatch.setattr(scan_cache.Witness, "unchanged", no_stat)
    assert select_project(root) is kept
    (root / ".offload" / "runs").mkdir(parents=True)  # offload's own records on the laptop: not a change
    assert select_project(root) is kept


def test_a_scan_right_after_a_change_is_not_kept(tmp_path):
    """Within RACY_NS of a change a second change could leave every timestamp as it was: scan again."""
    scan_cache.forget_all()
    root = tmp_path / "proj"
    make_project(root)
    first = select_project(root)
    assert select_project(root) is not first
    assert not scan_cache._kept


def test_includes_are_part_of_the_key(tmp_path, settled):
    root = tmp_path / "proj"
    make_project(root)
    plain = select_project(root)
    with_out = select_project(root, ["out/**"])
    assert "out/ckpt.pt" in {e.path for e in with_out.entries}
    assert "out/ckpt.pt" not in {e.path for e in plain.entries}
    assert select_project(root) is plain and select_project(root, ["out/**"]) is with_out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_edits_match_a_fresh_scan(tmp_path_factory, settled, seed):
    """Random creates, rewrites, deletes and renames between cached selections: each equals a fresh scan."""
    rng = random.Random(seed)
    root = tmp_path_factory.mktemp("proj")
    make_project(root)
    select_project(root)
    for _ in range(6):
        files = sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts)
        action = rng.choice(["create", "rewrite", "delete", "rename", "mkdir"])
        if action == "create" or not files:
            (root / rng.choice(["", "model", "data", "out", "model/deep"]) / f"n{rng.randrange(99)}.py").write_text("c")
        elif action == "rewrite":
            target = rng.choice(files)
            before = target.stat()
            target.write_bytes(os.urandom(before.st_size))
            os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
        elif action == "delete":
            rng.choice(files).unlink()
        elif action == "rename":
            source = rng.choice(files)
            source.rename(source.with_name(f"r{rng.randrange(99)}{source.suffix}"))
        else:
            (root / "model" / f"sub{rng.randrange(9)}").mkdir(exist_ok=True)
        assert as_seen(select_project(root)) == as_seen(select_files(root.resolve()))


def test_the_oldest_selection_goes_when_the_kept_ones_hold_too_many_paths(tmp_path, settled, monkeypatch):
    first, second = tmp_path / "one", tmp_path / "two"
    make_project(first)
    make_project(second)
    select_project(first)
    monkeypatch.setattr(scan_cache, "MAX_PATHS", 30)  # about one project's worth
    select_project(second)
    assert list(scan_cache._kept) == [(str(second.resolve()), ())]
