"""`offload hosts clean NAME`: old project directories on the host listed with size and last use, removed only once
confirmed, never one in use, never anything outside the workdir. Real CLI, real sshd, real files."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conftest import HOLD, run_offload
from terminal import run_in_terminal
from test_run import stop_leftover_jobs

MONTH_S = 30 * 24 * 3600


def make_project(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "hello.py").write_text("open('out.bin', 'wb').write(b'x' * 300000)\nprint('hi')\n")
    (root / "hold.py").write_text(HOLD)
    return root


def host_dir_of(project: Path) -> Path:
    meta = json.loads(next((project / ".offload" / "runs").glob("*/meta.json")).read_text())
    return Path(meta["project_dir"])


def age_tree(path: Path, seconds: float) -> None:
    """Make everything offload wrote there look `seconds` old (symlinks themselves untouched)."""
    then = time.time() - seconds
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(directory, name), (then, then), follow_symlinks=False)
    os.utime(path, (then, then))


def test_clean_lists_and_removes_only_old_idle_project_dirs(box, tmp_path):
    workdir = Path(box["workdir"])
    old, recent, busy = (make_project(tmp_path, name) for name in ("old", "recent", "busy"))
    for project in (old, recent):
        assert run_offload("run", "hello.py", cwd=project).returncode == 0
    release = tmp_path / "release"
    assert run_offload("run", "--detach", "hold.py", str(release), cwd=busy).returncode == 0
    try:
        outside = tmp_path / "outside"
        (outside / ".offload").mkdir(parents=True)  # looks like a project, but is not in the workdir
        (outside / "keep.txt").write_text("mine")
        os.symlink(outside, workdir / "linked-12345678")
        os.symlink(outside / "keep.txt", host_dir_of(old) / "link-out")  # inside a project, leading out
        (workdir / "not-a-project").mkdir()
        for project in (old, busy):
            age_tree(host_dir_of(project), MONTH_S)

        listed = run_offload("hosts", "clean", "box")  # no terminal, no --yes: the list, and nothing removed
        assert listed.returncode == 1
        assert "nothing removed: cannot confirm without a terminal" in listed.stderr
        assert "offload hosts clean box --yes" in listed.stderr
        lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
        assert set(lines) == {host_dir_of(p).name for p in (old, recent, busy)}  # no link, no stranger
        assert "remove" in lines[host_dir_of(old).name] and "30 days ago" in lines[host_dir_of(old).name]
        assert " kB " in lines[host_dir_of(old).name]  # out.bin (300 kB) and the rest
        assert "kept: used within 7 days" in lines[host_dir_of(recent).name]
        assert "in use:" in lines[host_dir_of(busy).name]
        assert host_dir_of(old).is_dir()

        removed = run_offload("hosts", "clean", "box", "--yes")
        assert removed.returncode == 0, removed.stderr
        assert "removed 1 project directory from box" in removed.stderr
        assert not host_dir_of(old).exists()
        assert host_dir_of(recent).is_dir() and host_dir_of(busy).is_dir()
        assert (outside / "keep.txt").read_text() == "mine" and (workdir / "linked-12345678").is_symlink()
        assert (workdir / "not-a-project").is_dir()
    finally:
        release.touch()
        stop_leftover_jobs(busy)


def test_clean_asks_in_a_terminal_and_no_keeps_everything(box, tmp_path):
    project = make_project(tmp_path, "proj")
    assert run_offload("run", "hello.py", cwd=project).returncode == 0
    host_dir = host_dir_of(project)
    code, shown = run_in_terminal(["hosts", "clean", "box", "--older-than", "0"], b"n\n", b"[y/N]")
    assert code == 0, shown
    assert "remove 1 project directory" in shown and "nothing removed" in shown
    assert host_dir.is_dir()
    code, shown = run_in_terminal(["hosts", "clean", "box", "--older-than", "0"], b"y\n", b"[y/N]")
    assert code == 0, shown
    assert "removed 1 project directory from box" in shown
    assert not host_dir.exists()


def test_the_host_keeps_a_project_dir_that_became_busy_after_it_was_listed(box, tmp_path):
    """The laptop only asks to remove what was idle when listed; a run that starts in between is the host's to
    see: asked through the agent itself, it keeps the directory and says why."""
    from offload.config.hosts import load
    from offload.config.resolve import resolve
    from offload.transport.link import Link

    busy = make_project(tmp_path, "busy")
    release = tmp_path / "release"
    assert run_offload("run", "--detach", "hold.py", str(release), cwd=busy).returncode == 0
    link = Link(resolve("box", load().get("box"))).open()
    try:
        answer = link.agent.request("remove_project", workdir=box["workdir"], name=host_dir_of(busy).name)
        assert answer["removed"] is False and answer["in_use"], answer
        assert (host_dir_of(busy) / "hold.py").is_file()
    finally:
        link.close()
        release.touch()
        stop_leftover_jobs(busy)
