"""Properties of a sync through the real sshd: random trees and edits, of content that compresses or not and sent
compressed or not, end up exactly on the host (what runs wrote there untouched), a client killed at random points never leaves a half-written file under its final
name, and a file that changes while it is sent is never recorded with the wrong content.
The host's workdir is a local path here, so the host tree is read directly."""

from __future__ import annotations

import fcntl
import hashlib
import io
import itertools
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import register_host, run_offload
from sshd_server import wait_for
from test_sync import wait_for_host_sync_end

from offload.errors import OffloadError
from offload.sync.push import project_dir_name, sync_project

PART_SUFFIX = ".offload-part"
REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20

GITIGNORE = "*.log\n!keep.log\n*.tmp\n!important.tmp\nbuild/\n"
# Written as .offloadignore: in a .gitignore, an ignored file beside synced ones would still be sent
# (selection.py's beside-rule); these tests are about the sync, so exactly these rules decide.
IGNORE_FILE = ".offloadignore"
FILE_NAMES = ["a.py", "b c.txt", "ünï cödé.md", "日本.txt", "x.log", "keep.log", "scratch.tmp", "important.tmp",
              " lead space", "tab\there"]
DIR_NAMES = ["d", "é dir", "sub dir", "build"]
LINK_TARGETS = ["a.py", "../b c.txt", "d/日本.txt", "no/such/file", ".", "é dir/x.log"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_ignored(relpath: str) -> bool:
    """GITIGNORE applied by hand: a dir named build anywhere hides everything below; *.log and *.tmp name files
    and links (never directories: DIR_NAMES has none that match), keep.log and important.tmp are re-included."""
    *dirs, name = relpath.split("/")
    if "build" in dirs or name == "build":
        return True
    if name.endswith(".log"):
        return name != "keep.log"
    if name.endswith(".tmp"):
        return name != "important.tmp"
    return False


def snapshot(root: Path, skip_top: tuple = ()) -> dict:
    """relpath -> ("file", sha256, exec bits) / ("link", target) / ("dir",)."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = Path(directory).relative_to(root).as_posix()
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip_top]
            filenames = [f for f in filenames if f not in skip_top]
        for name in dirnames + filenames:
            path = Path(directory) / name
            relpath = path.relative_to(root).as_posix()
            st_ = path.lstat()
            if stat.S_ISLNK(st_.st_mode):
                found[relpath] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                found[relpath] = ("dir",)
            else:
                found[relpath] = ("file", sha256(path), st_.st_mode & 0o777)
    return found


def expected_on_host(local: Path) -> dict:
    """The local tree minus what GITIGNORE excludes; a directory left with only ignored files is still there."""
    return {path: what for path, what in snapshot(local).items() if not is_ignored(path)}


# --- 1. random trees, random edits ---------------------------------------------------------------------------

class Tree:
    """The local project under edit; every write gets a unique mtime, so the quick check (size + mtime, as
    rsync's) never mistakes two versions for one: that blind spot is by design and not what this test is about."""

    def __init__(self, root: Path):
        self.root = root
        self.clock = itertools.count(1_600_000_000_000_000_000, 1_000_003)

    def paths(self, kind: str) -> list:
        found = []
        for directory, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = Path(directory) / name
                relpath = path.relative_to(self.root).as_posix()
                if relpath == IGNORE_FILE:
                    continue
                is_link, is_dir = path.is_symlink(), path.is_dir() and not path.is_symlink()
                if {"file": not is_link and not is_dir, "link": is_link, "dir": is_dir}[kind]:
                    found.append(relpath)
        return sorted(found)

    def free_path(self, data, names: list) -> Path | None:
        """A path that does not exist yet, in the root or an existing directory."""
        parent = self.root / data.draw(st.sampled_from([""] + self.paths("dir")), label="in")
        path = parent / data.draw(st.sampled_from(names), label="name")
        return None if os.path.lexists(path) else path

    def write(self, path: Path, content: bytes) -> None:
        path.write_bytes(content)
        stamp = next(self.clock)
        os.utime(path, ns=(stamp, stamp))


# Sizes about the edges of a compressed frame (protocol.CHUNK) and of the sample it is judged on (64 KiB).
BOUNDARY_SIZES = [0, 1, 100, (64 << 10) - 1, 64 << 10, (64 << 10) + 1, MiB - 1, MiB, MiB + 1, MiB + 70_000]


@st.composite
def contents(draw) -> bytes:
    """Short random bytes; or, of a size about a frame's edges, text that compresses, random bytes that do not,
    or the two in turn (a file whose sample compresses and whose rest does not)."""
    kind = draw(st.sampled_from(["short", "short", "text", "random", "mixed"]), label="content kind")
    if kind == "short":
        return draw(st.binary(max_size=3000), label="content")
    size, rng = draw(st.sampled_from(BOUNDARY_SIZES), label="size"), random.Random(draw(st.integers(0, 2**32)))
    text = " ".join(rng.choice(("loss", "step", "grad", "lr", "0.1", "=")) for _ in range(size // 3 + 1)).encode()
    if kind == "text":
        return text[:size]
    if kind == "random":
        return rng.randbytes(size)
    return b"".join(text[i:i + 8192] if (i // 8192) % 4 == 0 else rng.randbytes(8192) for i in range(0, size, 8192))[:size]


def apply_edit(tree: Tree, data) -> None:
    op = data.draw(st.sampled_from(["create", "create", "modify", "delete", "rename", "chmod", "symlink", "mkdir",
                                    "rmdir", "rename_dir"]), label="op")
    files, dirs = tree.paths("file"), tree.paths("dir")
    if op == "create" or (op in ("modify", "delete", "rename", "chmod") and not files):
        path = tree.free_path(data, FILE_NAMES)
        if path is not None:
            tree.write(path, data.draw(contents()))
    elif op == "modify":
        path = tree.root / data.draw(st.sampled_from(files), label="file")
        tree.write(path, data.draw(contents()))
    elif op == "delete":
        os.unlink(tree.root / data.draw(st.sampled_from(files + tree.paths("link")), label="victim"))
    elif op == "rename":
        source = tree.root / data.draw(st.sampled_from(files), label="file")
        destination = tree.free_path(data, FILE_NAMES)
        if destination is not None:
            os.rename(source, destination)
    elif op == "chmod":
        path = tree.root / data.draw(st.sampled_from(files), label="file")
        path.chmod(path.stat().st_mode ^ 0o111)
    elif op == "symlink":
        path = tree.free_path(data, FILE_NAMES)
        if path is not None:
            path.symlink_to(data.draw(st.sampled_from(LINK_TARGETS), label="target"))
    elif op == "mkdir" or not dirs:
        path = tree.free_path(data, DIR_NAMES)
        if path is not None:
            path.mkdir()
    elif op == "rmdir":
        shutil.rmtree(tree.root / data.draw(st.sampled_from(dirs), label="dir"))
    else:  # rename_dir
        source = data.draw(st.sampled_from(dirs), label="dir")
        destination = tree.free_path(data, DIR_NAMES)
        if destination is not None and not destination.as_posix().startswith((tree.root / source).as_posix() + "/"):
            os.rename(tree.root / source, destination)


examples = itertools.count()


# 50 examples (was 150, ~10 s more on two cores): each is up to 10 rounds of up to 5 edits with a sync after
# each round, so every edit kind, ignored paths and run outputs still meet, many times, in every run.
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_random_edits_sync_exactly_and_what_runs_wrote_survives(link, tmp_path, monkeypatch, data):
    agent, workdir = link
    root = tmp_path / f"proj{next(examples)}"  # a fresh project, so a fresh host directory, per example
    root.mkdir()
    tree = Tree(root)
    tree.write(root / IGNORE_FILE, GITIGNORE.encode())
    host_dir = Path(workdir) / project_dir_name(root)
    run_outputs = {}  # relpath -> snapshot entry of what "runs" wrote on the host
    for round_number in range(data.draw(st.integers(1, 10), label="rounds")):
        for _ in range(data.draw(st.integers(1, 5), label="edits")):
            apply_edit(tree, data)
        # Compressed or not (offload/sync/compress.py): the host ends up with the same bytes.
        monkeypatch.setenv("OFFLOAD_COMPRESS", data.draw(st.sampled_from(["auto", "always", "never"]), label="compress"))
        sync_project(agent, root, workdir, out=io.StringIO())
        if data.draw(st.booleans(), label="a run writes"):
            output = host_dir / "out" / f"run {round_number}" / "metrics ü.json"
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(os.urandom(64))
            run_outputs = {"out": ("dir",), **{f"out/{k}": v for k, v in snapshot(host_dir / "out").items()}}
        host = snapshot(host_dir, skip_top=(".offload",))
        assert host == {**expected_on_host(root), **run_outputs}
        assert not list(host_dir.rglob(f"*{PART_SUFFIX}"))


# --- 2. the client killed at random points ------------------------------------------------------------------

MAX_KILLS = 20


def sync_lock_free(host_dir: Path) -> bool:
    """Whether no agent is syncing into host_dir: its sync.lock (remote_agent/tree.py) can be taken."""
    fd = os.open(host_dir / ".offload" / "sync.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # the lock, if taken, goes with it


def offload_sync_then_kill(project: Path, host_dir: Path, delay_s: float | None) -> bool:
    """Start `offload sync`, SIGKILL it after delay_s (None: as soon as a file is in flight); returns whether a
    file was in flight at that moment."""
    proc = subprocess.Popen([sys.executable, "-m", "offload", "sync", "--project", str(project)], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mid_file = False
    try:
        in_flight = lambda: proc.poll() is None and any(host_dir.rglob(f"*{PART_SUFFIX}"))  # noqa: E731
        if delay_s is None:
            wait_for(lambda: in_flight() or proc.poll() is not None, 30)
        else:
            time.sleep(delay_s)
        mid_file = in_flight()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    return mid_file


def test_a_client_killed_at_random_points_never_leaves_a_half_written_file(offload_home, fresh_sshd, tmp_path):
    host = register_host(offload_home, fresh_sshd)
    rng = random.Random(20261122)
    project = tmp_path / "proj"
    project.mkdir()
    big = [f"weights {i}.bin" for i in range(3)]
    small = [f"src/m{i:03d}.py" for i in range(150)]
    versions = {}  # relpath -> every complete content it ever had locally (sha256)

    def change(paths: list, big_size: int = 0) -> None:
        for relpath in paths:
            path = project / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(big_size * MiB if relpath in big else rng.randint(10, 5000)))
            versions.setdefault(relpath, set()).add(sha256(path))

    for relpath in big:
        change([relpath], rng.randint(20, 40))
    change(small)
    host_dir = Path(host["workdir"]) / project_dir_name(project)
    assert run_offload("sync", "--project", str(project)).returncode == 0  # starts the link keeper
    change(rng.sample(big, 2), rng.randint(20, 40))  # what each attempt below changes
    change(rng.sample(small, 30))
    started = time.monotonic()
    result = run_offload("sync", "--project", str(project))  # the old versions, all on the host
    assert result.returncode == 0, result.stderr
    full_sync_s = time.monotonic() - started  # kills are spread over the time a sync of this size takes
    killed_before_the_end = killed_mid_file = 0
    for attempt in range(MAX_KILLS):  # every third kill the moment a file is in flight, the rest at random points
        if attempt >= 10 and killed_before_the_end >= 5 and killed_mid_file >= 3:
            break  # on a busy machine more kills land after the end: go on until enough landed before it
        delay_s = None if attempt % 3 == 0 else rng.uniform(0.02, 0.9 * full_sync_s)
        killed_mid_file += offload_sync_then_kill(project, host_dir, delay_s)
        # The agent notices the laptop is gone, stops (its sync's lock is free: the keeper may have handed it
        # more of the stream first) and removes its partial file.
        assert wait_for(lambda: sync_lock_free(host_dir) and not list(host_dir.rglob(f"*{PART_SUFFIX}")), 10), \
            "a partial file stayed"
        on_host = snapshot(host_dir, skip_top=(".offload",))
        # Every file is still there under its final name (it was after the first sync), whole.
        assert {path for path, what in on_host.items() if what[0] == "file"} == set(versions)
        for relpath, what in on_host.items():
            if what[0] == "file":
                assert what[1] in versions[relpath], f"attempt {attempt}: {relpath} is half-written"
        killed_before_the_end += snapshot(project) != on_host
        change(rng.sample(big, 2), rng.randint(20, 40))
        change(rng.sample(small, 30))
    assert killed_before_the_end >= 5, "most kills landed after the sync was done: nothing was interrupted"
    assert killed_mid_file >= 3, "too few kills landed while a file was in flight"

    result = run_offload("sync", "--project", str(project))
    assert result.returncode == 0, result.stderr
    assert snapshot(host_dir, skip_top=(".offload",)) == snapshot(project)
    assert not list(host_dir.rglob(f"*{PART_SUFFIX}"))


# --- 3. a file that changes while it is sent, through the real sshd ------------------------------------------

def test_a_file_appended_to_while_it_is_sent_is_resent_or_reported_never_synced_wrong(link, tmp_path):
    agent, workdir = link
    project = tmp_path / "proj"
    project.mkdir()
    growing = project / "growing.bin"
    growing.write_bytes(os.urandom(48 * MiB))
    initial_size = growing.stat().st_size
    host_file = Path(workdir) / project_dir_name(project) / "growing.bin"
    part = host_file.with_name(f".growing.bin{PART_SUFFIX}")
    done, appended = threading.Event(), []

    def append_while_the_first_copy_is_in_flight() -> None:
        """Append as soon as the first part file appears, and keep at it until it is gone (dropped)."""
        if not wait_for(lambda: part.exists() or done.is_set(), 30) or done.is_set():
            return
        while part.exists() and not done.is_set():
            with open(growing, "ab") as f:
                f.write(os.urandom(4096))
            appended.append(4096)
            time.sleep(0.005)

    writer = threading.Thread(target=append_while_the_first_copy_is_in_flight)
    writer.start()
    try:
        try:
            first = sync_project(agent, project, workdir, out=io.StringIO())
            reported = None
        except OffloadError as exc:
            first, reported = None, exc
    finally:
        done.set()
        writer.join(timeout=30)
    assert not writer.is_alive()
    assert appended, "the file was never changed while in flight"
    assert not part.exists()
    final = growing.read_bytes()
    if reported is not None:
        assert reported.message == "growing.bin kept changing while it was being sent; it was not synced"
        assert not host_file.exists()  # new on the host: never there with bytes of a changing file
    else:
        assert first.sent_files == 1
        assert first.sent_bytes > initial_size  # the first copy was dropped and the file sent again
        on_host = host_file.read_bytes()
        assert final.startswith(on_host)  # one whole version: the file as it was at some moment
        assert host_file.stat().st_size == len(on_host)

    second = sync_project(agent, project, workdir, out=io.StringIO())
    assert host_file.read_bytes() == final
    assert second.sent_files == (0 if reported is None and len(final) == len(on_host) else 1)
    wait_for_host_sync_end(host_file.parent)
    synced = json.loads((host_file.parent / ".offload" / "synced.json").read_text())["paths"]
    assert "growing.bin" in synced
    out = io.StringIO()
    assert sync_project(agent, project, workdir, out=out).unchanged == 1
    assert "is up to date (1 file)" in out.getvalue()


def test_a_directory_removed_locally_goes_from_the_host_unless_a_run_wrote_in_it_or_it_is_still_local(
        link, tmp_path):
    agent, workdir = link
    project = tmp_path / "proj"
    for relpath in ("gone/deep/a.py", "ran/b.py", "kept/c.py", "kept/x.log"):
        (project / relpath).parent.mkdir(parents=True, exist_ok=True)
        (project / relpath).write_text(relpath)
    (project / IGNORE_FILE).write_text("*.log\n")
    sync_project(agent, project, workdir, out=io.StringIO())
    host_dir = Path(workdir) / project_dir_name(project)
    (host_dir / "ran" / "metrics.json").write_text("{}")  # a run's output, in a directory the sync made
    shutil.rmtree(project / "gone")
    shutil.rmtree(project / "ran")
    (project / "kept" / "c.py").unlink()  # kept/ is still here, holding only an ignored file

    assert sync_project(agent, project, workdir, out=io.StringIO()).deleted == 3
    mode = (project / IGNORE_FILE).stat().st_mode & 0o777
    assert snapshot(host_dir, skip_top=(".offload",)) == {
        IGNORE_FILE: ("file", sha256(project / IGNORE_FILE), mode), "kept": ("dir",),
        "ran": ("dir",), "ran/metrics.json": ("file", hashlib.sha256(b"{}").hexdigest(), mode)}


# --- 4. renames and copies of big files across two projects (the host's content index) ----------------------

BIG_NAMES = ["w0.bin", "w1.bin", "w 2.bin"]
BIG_DIRS = ["", "data", "data2"]


def big_content(data, pool: list, label: str) -> bytes:
    """A big file (past DELTA_MIN_BYTES) made of the pool's blocks, so files share blocks, and a random tail."""
    blocks = data.draw(st.lists(st.integers(0, len(pool) - 1), min_size=33, max_size=36), label=label)
    return b"".join(pool[i] for i in blocks) + data.draw(st.binary(max_size=5000), label="tail")


def apply_big_edit(trees: list, data, pool: list) -> None:
    """One edit of one of two projects: a new big file, a copy of one (from either project, maybe with a block
    changed), a rename of a file or of a whole directory, a block rewritten, or a delete."""
    tree = data.draw(st.sampled_from(trees), label="project")
    op = data.draw(st.sampled_from(["new", "copy", "copy", "copy", "rename", "rename", "rename_dir", "edit",
                                    "delete"]), label="op")
    files = [(t, p) for t in trees for p in t.paths("file")]
    own = tree.paths("file")
    free = tree.root / data.draw(st.sampled_from(BIG_DIRS), label="dir") / data.draw(st.sampled_from(BIG_NAMES))
    if op == "new" or (op in ("copy", "rename", "edit", "delete") and not files) or (op != "copy" and not own):
        if not os.path.lexists(free):
            free.parent.mkdir(exist_ok=True)
            tree.write(free, big_content(data, pool, "blocks"))
    elif op == "copy":
        source_tree, source = data.draw(st.sampled_from(files), label="source")
        content = bytearray((source_tree.root / source).read_bytes())
        if data.draw(st.booleans(), label="change a block"):
            at = data.draw(st.integers(0, len(content) - 1), label="at")
            content[at:at + 100] = os.urandom(len(content[at:at + 100]))
        if not os.path.lexists(free):
            free.parent.mkdir(exist_ok=True)
            tree.write(free, bytes(content))
    elif op == "rename" and not os.path.lexists(free):
        free.parent.mkdir(exist_ok=True)
        os.rename(tree.root / data.draw(st.sampled_from(own), label="file"), free)
    elif op == "rename_dir":
        source, destination = (tree.root / name for name in data.draw(st.permutations(BIG_DIRS[1:]), label="dirs"))
        if source.exists() and not destination.exists():
            os.rename(source, destination)
    elif op == "edit":
        path = tree.root / data.draw(st.sampled_from(own), label="file")
        content = bytearray(path.read_bytes())
        at = data.draw(st.integers(0, len(content)), label="at")
        content[at:at] = pool[data.draw(st.integers(0, len(pool) - 1), label="block")][:data.draw(st.integers(1, 5000))]
        tree.write(path, bytes(content))
    elif op == "delete":
        os.unlink(tree.root / data.draw(st.sampled_from(own), label="file"))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(data=st.data())
def test_big_files_renamed_and_copied_across_two_projects_sync_exactly(link, tmp_path, data):
    agent, workdir = link
    example = next(examples)
    pool = [random.Random(i).randbytes(256 << 10) for i in range(8)]
    trees = []
    for name in ("one", "two"):
        root = tmp_path / f"{name}{example}"
        root.mkdir()
        trees.append(Tree(root))
    for _ in range(data.draw(st.integers(2, 4), label="rounds")):
        for _ in range(data.draw(st.integers(1, 3), label="edits")):
            apply_big_edit(trees, data, pool)
        for tree in trees:
            sync_project(agent, tree.root, workdir, out=io.StringIO())
            host_dir = Path(workdir) / project_dir_name(tree.root)
            assert snapshot(host_dir, skip_top=(".offload",)) == expected_on_host(tree.root)  # content hashes
            assert not list(host_dir.rglob(f"*{PART_SUFFIX}"))
