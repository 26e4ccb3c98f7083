"""`offload sync` end to end against a real sshd: what travels, what stays, what is deleted, and what an
interrupted sync leaves behind. The host's workdir is a local path, so the host tree is read directly."""

from __future__ import annotations

import hashlib
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_offload, register_host
from sshd_server import wait_for
from terminal import read_terminal

from offload.sync.scan import LocalEntry, scan_project
from offload.sync.push import project_dir_name
from offload.sync.push_plan import plan_sync, up_to_date
from remote_agent.tree import SYNC_LOCK, try_lock, unlock

PART_SUFFIX = ".offload-part"
REPO_ROOT = Path(__file__).resolve().parent.parent


def host_project_dir(workdir: str, project: Path) -> Path:
    return Path(workdir) / project_dir_name(project)


def tree(root: Path, skip: tuple = ()) -> dict:
    """relpath -> what is there: ("file", bytes, permission bits, mtime_ns), ("link", target) or ("dir",);
    skip: names at the top not walked at all (an agent may still be tidying its `.offload/` there)."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        if Path(directory) == Path(root):
            dirnames[:] = [name for name in dirnames if name not in skip]
            filenames = [name for name in filenames if name not in skip]
        for name in dirnames + filenames:
            path = Path(directory) / name
            relpath = path.relative_to(root).as_posix()
            st = path.lstat()
            if path.is_symlink():
                found[relpath] = ("link", os.readlink(path))
            elif path.is_dir():
                found[relpath] = ("dir",)
            else:
                found[relpath] = ("file", path.read_bytes(), st.st_mode & 0o777, st.st_mtime_ns)
    return found


def wait_for_host_sync_end(host_dir: Path) -> None:
    """Until the agent has let go of the project's sync lock: it saves the sync's records after its reply
    to the laptop (files.py), so a CLI that has returned may be a moment ahead of the host's .offload/."""
    def lock_is_free() -> bool:
        fd = try_lock(str(host_dir / SYNC_LOCK))
        unlock(fd)
        return fd is not None
    assert wait_for(lock_is_free, 10), "the agent still holds the sync lock"


def part_files(root: Path) -> list:
    return sorted(str(path) for path in root.rglob(f"*{PART_SUFFIX}"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kill_sync_when_in_flight(project: Path, part: Path) -> tuple:
    """Start `offload sync`, SIGKILL it once the host's part file has bytes; (whether it had, exit status)."""
    proc = subprocess.Popen([sys.executable, "-m", "offload", "sync", "--project", str(project)], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        in_flight = wait_for(lambda: part.exists() and part.stat().st_size > 0, 30)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    return in_flight, proc.returncode


def sync(project: Path, *args: str):
    result = run_offload("sync", "--project", str(project), *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def write(path: Path, content: str | bytes, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    if mode is not None:
        path.chmod(mode)
    return path


def make_ignore_project(root: Path) -> dict:
    """A project using every kind of exclusion; returns the tree the host must end up with."""
    write(root / ".gitignore", "*.log\n/build/\nckpt/\n*.csv\n!keep.log\n")
    write(root / ".offloadignore", "datasets/\n!override.log\n")
    write(root / ".git" / "info" / "exclude", "secret.txt\n")
    write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(root / "train.sh", "#!/bin/sh\necho train\n", mode=0o755)
    write(root / "readonly.cfg", "lr = 3e-4\n", mode=0o444)
    write(root / "data" / "train.txt", "hello world\n")
    write(root / "data" / ".gitignore", "!wanted.csv\n")
    write(root / "data" / "wanted.csv", "a,b\n1,2\n")
    write(root / "data" / "other.csv", "x\n")
    write(root / "sub" / ".gitignore", "*.tmp\n!important.tmp\n")
    write(root / "sub" / "important.tmp", "keep me\n")
    write(root / "sub" / "scratch.tmp", "drop me\n")
    write(root / "sub" / "keep.log", "kept by !keep.log\n")
    write(root / "sub" / "debug.log", "ignored\n")
    write(root / "override.log", "re-included by .offloadignore\n")
    write(root / "secret.txt", "excluded by .git/info/exclude\n")
    write(root / "datasets" / "big.bin", b"\0" * 1000)
    write(root / "build" / "lib.so", b"\1")
    write(root / "sub" / "build" / "kept.txt", "only /build/ at the root is excluded\n")
    write(root / "ckpt" / "model.pt", b"\2")
    for always in ("__pycache__/m.pyc", "sub/__pycache__/n.pyc", ".venv/bin/python", "venv/lib/x.py",
                   ".offload/runs/old.json", "sub/venv/y.py"):
        write(root / always, "never synced\n")
    (root / "empty").mkdir()
    (root / "latest").symlink_to("data/train.txt")
    (root / "dangling").symlink_to("no/such/file")
    expected_paths = ["report.py", ".gitignore", ".offloadignore", "train.sh", "readonly.cfg", "data",
                      "data/train.txt", "data/.gitignore", "data/wanted.csv", "sub", "sub/.gitignore",
                      "sub/important.tmp", "sub/keep.log", "sub/build", "sub/build/kept.txt", "override.log",
                      "empty", "latest", "dangling",
                      # git-ignored, but beside synced files (selection.py): sent all the same
                      "secret.txt", "data/other.csv", "sub/scratch.tmp", "sub/debug.log"]
    local = tree(root)
    return {path: local[path] for path in expected_paths}


def test_sync_sends_exactly_the_files_not_ignored_with_content_modes_links_and_empty_dirs(box, project):
    expected = make_ignore_project(project)

    result = run_offload("sync", cwd=project)

    assert result.returncode == 0, result.stderr
    host_dir = host_project_dir(box["workdir"], project)
    wait_for_host_sync_end(host_dir)
    got = tree(host_dir)
    assert got.pop(".offload") == ("dir",)
    assert got.pop(".offload/synced.json")[0] == "file"
    for lock in (".offload/sync.lock", ".offload/tree.lock"):
        assert got.pop(lock)[0] == "file"
    assert got == expected  # content, permission bits (0o755, 0o444) and mtimes too
    assert sorted(os.listdir(box["workdir"])) == [".agent", host_dir.name]
    assert part_files(Path(box["workdir"])) == []


def test_project_flag_and_cwd_reach_the_same_host_dir_and_host_flag_picks_the_host(
        offload_home, sshd, project, tmp_path):
    # box's workdir given, so nothing is installed there ahead (register_host's default): untouched means absent
    register_host(offload_home, sshd, name="box", workdir=str(tmp_path / "remote-box"))
    other = register_host(offload_home, sshd, name="other")
    write(project / "a.txt", "a\n")

    first = run_offload("sync", "--host", "other", "--project", str(project), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    host_dir = host_project_dir(other["workdir"], project)
    assert (host_dir / "a.txt").read_text() == "a\n"
    assert not (tmp_path / "remote-box").exists()  # the default host was not touched
    assert re.fullmatch(r"proj-[0-9a-f]{8}", host_dir.name)

    again = run_offload("sync", "--host", "other", cwd=project)
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines()[0] == "sync: other is up to date (2 files)"


def test_an_unchanged_file_is_not_rewritten_and_a_changed_one_is(box, project):
    write(project / "data" / "train.txt", "hello\n")
    write(project / "model.py", "import torch\n")
    sync(project)
    host_dir = host_project_dir(box["workdir"], project)

    def stats():
        return {path: (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
                for path in ("report.py", "model.py", "data/train.txt") for st in [os.lstat(host_dir / path)]}

    before = stats()
    again = sync(project)
    assert again.stderr.splitlines() == ["sync: box is up to date (3 files)"]
    assert stats() == before

    time.sleep(0.01)
    write(project / "data" / "train.txt", "hello, changed\n")
    changed = sync(project)
    assert changed.stderr.splitlines()[0] == f"sync: 1 file, 15 B; largest: data/train.txt (15 B) -> box:{host_dir}"
    after = stats()
    assert after["report.py"] == before["report.py"] and after["model.py"] == before["model.py"]
    assert after["data/train.txt"][0] != before["data/train.txt"][0]  # a new file, renamed into place
    assert (host_dir / "data" / "train.txt").read_text() == "hello, changed\n"


def test_a_mode_change_alone_is_synced(box, project):
    write(project / "run.sh", "#!/bin/sh\n", mode=0o644)
    sync(project)
    (project / "run.sh").chmod(0o755)
    result = sync(project)
    assert result.stderr.splitlines()[0].startswith("sync: 1 file, 10 B; largest: run.sh (10 B) -> ")
    assert os.stat(host_project_dir(box["workdir"], project) / "run.sh").st_mode & 0o777 == 0o755


def test_only_files_an_earlier_sync_put_there_are_deleted(box, project):
    write(project / "gone.txt", "deleted locally\n")
    write(project / "later_ignored.txt", "ignored later, still here\n")
    write(project / "d" / "x.txt", "x\n")
    sync(project)
    host_dir = host_project_dir(box["workdir"], project)
    write(host_dir / "out" / "metrics.json", "{}\n")  # what runs write on the host
    write(host_dir / "checkpoints" / "step100.pt", b"\3" * 100)
    write(host_dir / "made_on_host.txt", "mine\n")
    write(host_dir / "d" / "run_output.txt", "written by a run into a synced directory\n")

    (project / "gone.txt").unlink()
    (project / "d" / "x.txt").unlink()
    write(project / ".offloadignore", "later_ignored.txt\n")  # .gitignore alone would not do: it sits beside report.py
    result = sync(project)

    assert result.stderr.splitlines()[0] == (f"sync: 1 file, 18 B; largest: .offloadignore (18 B); 2 to delete"
                                             f" -> box:{host_dir}")
    assert not (host_dir / "gone.txt").exists() and not (host_dir / "d" / "x.txt").exists()
    assert (host_dir / "later_ignored.txt").read_text() == "ignored later, still here\n"
    assert (host_dir / "out" / "metrics.json").read_text() == "{}\n"
    assert (host_dir / "checkpoints" / "step100.pt").read_bytes() == b"\3" * 100
    assert (host_dir / "made_on_host.txt").read_text() == "mine\n"
    assert (host_dir / "d" / "run_output.txt").exists()

    (project / "later_ignored.txt").unlink()  # it stopped being ours when it became ignored
    sync(project)
    assert (host_dir / "later_ignored.txt").read_text() == "ignored later, still here\n"


def test_a_file_ignored_through_git_info_exclude_alone_is_never_deleted_later(box, project):
    write(project / "notes" / "notes.txt", "kept on the host\n")
    sync(project)
    write(project / ".git" / "info" / "exclude", "/notes/\n")  # nothing synced changes: an up-to-date sync
    assert sync(project).stderr.splitlines()[0] == "sync: box is up to date (1 file)"
    (project / "notes" / "notes.txt").unlink()
    sync(project)
    assert (host_project_dir(box["workdir"], project) / "notes" / "notes.txt").read_text() == "kept on the host\n"


def test_a_file_replaced_by_a_directory_and_back_syncs(box, project):
    write(project / "config", "a file first\n")
    sync(project)
    (project / "config").unlink()
    write(project / "config" / "train.yaml", "lr: 1\n")
    sync(project)
    host_dir = host_project_dir(box["workdir"], project)
    assert (host_dir / "config" / "train.yaml").read_text() == "lr: 1\n"

    (project / "config" / "train.yaml").unlink()
    (project / "config").rmdir()
    write(project / "config", "a file again\n")
    sync(project)
    assert (host_dir / "config").read_text() == "a file again\n"


def test_the_summary_line_names_count_size_and_largest_and_a_pipe_gets_no_escape_codes(box, project):
    write(project / "big.bin", b"\0" * 9_000_000)  # over the progress bar's 8 MiB: only the terminal check stops it
    write(project / "mid.bin", b"\0" * 1_200_000)
    write(project / "small.txt", "0123456789")

    result = sync(project)

    host_dir = host_project_dir(box["workdir"], project)
    lines = result.stderr.splitlines()
    assert lines[0] == (f"sync: 4 files, 10.2 MB; largest: big.bin (9.0 MB), mid.bin (1.2 MB), report.py (248 B)"
                        f" -> box:{host_dir}")
    assert len(lines) == 2 and lines[1].startswith("offload: synced ")
    assert "\x1b" not in result.stderr + result.stdout and "\r" not in result.stderr
    assert sha256(host_dir / "big.bin") == sha256(project / "big.bin")


def test_a_terminal_gets_a_progress_bar_for_a_large_transfer(box, project):
    write(project / "big.bin", os.urandom(9_000_000))
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "offload", "sync", "--project", str(project)], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
                            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"})
    os.close(terminal)
    try:
        shown = read_terminal(controller, 60)  # until the child closes the terminal: a full pty would block it
        assert proc.wait(timeout=60) == 0, shown
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        os.close(controller)
    text = shown.decode(errors="replace")
    assert "sync: 2 files, 9.0 MB; largest: big.bin (9.0 MB)" in text
    assert "\x1b[" in text and re.search(r"sync .*\d\.\d/9\.0 MB", text)  # the bar: "sync ━━━ 4.2/9.0 MB 36 MB/s"
    assert sha256(host_project_dir(box["workdir"], project) / "big.bin") == sha256(project / "big.bin")


def test_killing_the_client_mid_file_leaves_the_old_file_whole_and_the_next_sync_completes(
        offload_home, fresh_sshd, project):
    host = register_host(offload_home, fresh_sshd)
    write(project / "weights.bin", os.urandom(1_000_000))
    old_sha = sha256(project / "weights.bin")
    sync(project)
    host_dir = host_project_dir(host["workdir"], project)
    write(project / "weights.bin", os.urandom(96 << 20))

    part = host_dir / f".weights.bin{PART_SUFFIX}"
    in_flight, returncode = kill_sync_when_in_flight(project, part)
    assert in_flight, "the sync ended before the big file was in flight"
    assert returncode == -signal.SIGKILL
    assert sha256(host_dir / "weights.bin") == old_sha  # never a partial file under the final name
    assert wait_for(lambda: not part.exists(), 10), "the agent did not remove its partial file"

    result = sync(project)
    assert result.stderr.splitlines()[0].startswith("sync: 1 file, 100.7 MB; largest: weights.bin (100.7 MB)")
    assert sha256(host_dir / "weights.bin") == sha256(project / "weights.bin")
    assert part_files(host_dir) == []


# --- plan_sync: the pure decision, on entries scanned from real directories ------------------------------

def described(root: Path, entries: list) -> dict:
    """What the agent's manifest reports for paths present under root (the host's view)."""
    from remote_agent.manifest import describe

    return {e.path: found for e in entries if (found := describe(str(root / e.path))) is not None}


def test_plan_sends_new_and_changed_entries_and_counts_the_rest(tmp_path):
    local, host = tmp_path / "local", tmp_path / "host"
    for root in (local, host):
        write(root / "same.txt", "same\n")
        write(root / "content.txt", "0123\n")
        write(root / "mode.sh", "#!/bin/sh\n", mode=0o644)
        (root / "emptydir").mkdir()
    write(local / "content.txt", "3210\n")  # same size: caught by the mtime
    (local / "mode.sh").chmod(0o755)
    write(local / "new.txt", "new\n")
    (local / "link").symlink_to("same.txt")
    (host / "link").symlink_to("content.txt")
    for name in ("same.txt", "mode.sh", "emptydir"):
        st = os.lstat(local / name)
        os.utime(host / name, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(host / "content.txt", ns=(1, 1))
    entries = scan_project(local)

    plan = plan_sync(entries, described(host, entries), [], lambda path: True)

    assert sorted(e.path for e in plan.send) == ["content.txt", "link", "mode.sh", "new.txt"]
    assert plan.unchanged == 2  # same.txt, emptydir
    assert plan.delete == [] and plan.forget == []


def test_plan_deletes_only_synced_paths_gone_locally(tmp_path):
    write(tmp_path / "kept.txt", "k\n")
    write(tmp_path / "ignored_now.txt", "i\n")
    write(tmp_path / ".gitignore", "ignored_now.txt\n")
    entries = scan_project(tmp_path)
    assert [e.path for e in entries] == [".gitignore", "kept.txt"]
    present = {"kept.txt": ["file", 2, 1, 0o644, ""], "gone.txt": ["file", 1, 1, 0o644, ""],
               "ignored_now.txt": ["file", 2, 1, 0o644, ""], "run_output.txt": ["file", 9, 1, 0o644, ""]}
    synced = ["gone.txt", "ignored_now.txt", "kept.txt"]  # run_output.txt was never ours

    plan = plan_sync(entries, present, synced, lambda path: os.path.lexists(tmp_path / path))

    assert plan.delete == ["gone.txt"]
    assert plan.forget == ["ignored_now.txt"]
    assert sorted(e.path for e in plan.send) == [".gitignore", "kept.txt"]


def test_plan_deletes_a_synced_file_where_a_directory_now_is_but_keeps_a_synced_directory(tmp_path):
    write(tmp_path / "config" / "a.yaml", "a\n")
    write(tmp_path / "data" / "x.txt", "x\n")
    entries = scan_project(tmp_path)
    present = {"config": ["file", 5, 1, 0o644, ""], "data": ["dir", 0, 1, 0o755, ""]}

    plan = plan_sync(entries, present, ["config", "data"], lambda path: os.path.lexists(tmp_path / path))

    assert plan.delete == ["config"]  # else config/a.yaml could never be written there
    assert plan.forget == ["data"]  # an empty directory a sync made, which now has files: never removed


def test_up_to_date_compares_kind_size_mtime_mode_and_link_target():
    entry = LocalEntry("a", "file", 5, 123, 0o644)
    assert up_to_date(entry, ["file", 5, 123, 0o100644 & 0o7777, ""])
    assert not up_to_date(entry, None)
    assert not up_to_date(entry, ["file", 6, 123, 0o644, ""])
    assert not up_to_date(entry, ["file", 5, 124, 0o644, ""])
    assert not up_to_date(entry, ["file", 5, 123, 0o755, ""])
    assert not up_to_date(entry, ["link", 0, 123, 0o777, "a"])
    assert up_to_date(LocalEntry("l", "link", 0, 1, 0o777, "t"), ["link", 0, 2, 0o777, "t"])
    assert not up_to_date(LocalEntry("l", "link", 0, 1, 0o777, "t"), ["link", 0, 1, 0o777, "u"])
