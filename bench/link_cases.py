"""The cases of issue 14's targets table, each timed `repeat` times for every tool and checked byte for byte.

Every repetition of a case starts the host from the same kind of state: a first sync from an empty destination,
a renamed data dir from the host's copy of the last name, a second project with no copy of it yet.
"""
from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from link_data import change_middle, copy_tree, reclone, say, tree_digest
from link_tools import OFFLOAD, RSYNC, Tools

INCREMENTAL = (OFFLOAD, RSYNC)  # the tools that can sync a change (tar and the ssh pipe send everything)
DATA_DIR, RENAMED_DIR = "data", "data_v2"
EDIT_PAUSE_S = 1.1  # edits a second apart, as a person's are: rsync's quick check compares whole seconds
TENSOR = "embeddings.f32"  # in the data dir: the 1 MiB change goes in the middle of it


@dataclass
class Row:
    link: str        # "100mbit", "1gbit", "loopback"
    case: str
    data_bytes: int  # the bytes of the tree synced
    runs: dict = field(default_factory=dict)  # tool -> [Run]

    def median(self, tool: str, attribute: str = "seconds") -> float | None:
        runs = self.runs.get(tool)
        return statistics.median(getattr(run, attribute) for run in runs) if runs else None


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def set_aside(tools: Tools, path: Path) -> None:
    """Move a copy out of the way (out of offload's workdir too), to be deleted with the bench's scratch.
    Not deleted here: on an ext4 without a journal (this kind of VM's disk) the kernel will not reuse an inode
    freed in the last 60 s (300 s while its table block is dirty), and every create after a mass delete scans
    past them: measured, 64% of a 30,000-file sync's host CPU in find_inode_bit/recently_deleted, charged to
    whichever tool ran next."""
    if path.exists():
        aside = tools.scratch / "set_aside"
        aside.mkdir(exist_ok=True)
        path.rename(aside / f"{len(list(aside.iterdir()))}")


def timed(row: Row, tools: Tools, tool: str, source: Path) -> None:
    row.runs.setdefault(tool, []).append(tools.sync(tool, source))


def check_copies(tools: Tools, names: tuple, source: Path) -> None:
    """Raise unless each tool's copy holds every file of source, byte for byte (a fast wrong copy is no win)."""
    expected = tree_digest(source)
    for tool in names:
        copy = tools.copy_of(tool, source)
        got = tree_digest(copy)
        if got != expected:
            raise RuntimeError(f"{tool}'s copy {copy} differs from {source}: {got[1:]} files/bytes, "
                               f"expected {expected[1:]}")


def done(row: Row) -> Row:
    say(f"  done: {row.link} {row.case}")
    return row


def first_sync(tools: Tools, source: Path, names: tuple, repeat: int, case: str) -> Row:
    """Each tool into an empty destination, every repetition; the last copies stay on the host."""
    tools.fresh_home()
    row = Row(tools.link.label, case, tree_digest(source)[2])
    for _ in range(repeat):
        for tool in names:
            set_aside(tools, tools.copy_of(tool, source))
            timed(row, tools, tool, source)
    check_copies(tools, names, source)
    return done(row)


def renamed(tools: Tools, project: Path, repeat: int) -> Row:
    """The data dir renamed on the laptop, to and fro (data/ <-> data_v2/), so each repetition renames what the
    host has; the host's copy is never restored by copying it, as offload's records tell a copy from its own writes."""
    tools.fresh_home()
    row = Row(tools.link.label, "data dir renamed", tree_digest(data_dir(project))[2])
    for _ in range(repeat):
        old = data_dir(project)
        old.rename(project / (RENAMED_DIR if old.name == DATA_DIR else DATA_DIR))
        for tool in INCREMENTAL:
            timed(row, tools, tool, project)
    check_copies(tools, INCREMENTAL, project)
    return done(row)


def data_dir(project: Path) -> Path:
    """The project's data dir under whichever name the renames left it."""
    return project / DATA_DIR if (project / DATA_DIR).exists() else project / RENAMED_DIR


def second_project(tools: Tools, project: Path, repeat: int) -> Row:
    """The same files in a second project (its own directory on the host) while the first stays there."""
    tools.fresh_home()
    other = project.with_name(project.name + "_second")
    copy_tree(project, other)
    row = Row(tools.link.label, "same data, second project", tree_digest(other)[2])
    for _ in range(repeat):
        for tool in INCREMENTAL:
            remove(tools.copy_of(tool, other))
            timed(row, tools, tool, other)
    check_copies(tools, INCREMENTAL, other)
    for tool in INCREMENTAL:
        remove(tools.copy_of(tool, other))
    remove(other)
    return done(row)


def edited(tools: Tools, project: Path, repeat: int, case: str, edit) -> Row:
    """edit(project) before each repetition (None: nothing changed), then every incremental tool syncs."""
    tools.fresh_home()
    row = Row(tools.link.label, case, tree_digest(project)[2])
    for _ in range(repeat):
        if edit is not None:
            time.sleep(EDIT_PAUSE_S)
            edit(project)
        for tool in INCREMENTAL:
            timed(row, tools, tool, project)
    check_copies(tools, INCREMENTAL, project)
    return done(row)


def ml_cases(tools: Tools, project: Path, first_tools: tuple, repeat: int, rows: list) -> None:
    """Every ML project case, appended to rows as each is done."""
    rows.append(first_sync(tools, project, first_tools, repeat, "ML project first sync"))
    rows.append(renamed(tools, project, repeat))
    rows.append(second_project(tools, project, repeat))
    rows.append(edited(tools, project, repeat, "project deleted and re-cloned", reclone))
    rows.append(edited(tools, project, repeat, "1 MiB changed", lambda root: change_middle(data_dir(root) / TENSOR)))
    rows.append(edited(tools, project, repeat, "nothing changed", None))
    for tool in first_tools:
        remove(tools.copy_of(tool, project))
