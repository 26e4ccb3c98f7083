"""A run's files that are not its own versions any more (a later run, or someone on the host, changed or
deleted them since; see remote_agent/outputs.py): said by `offload fetch`, remembered in the run's meta.json
when they were withheld from its files dir, and refused by `--resume`, which must not put back a checkpoint of
another run, or a set of files that lacks one."""
from __future__ import annotations

from pathlib import Path

from remote_agent.fetching import matches, pattern_parts
from remote_agent.protocol import DELETED, Withheld

from offload.errors import OffloadError
from offload.runs.record import find_run, record_of

def recorded_withheld(meta: dict) -> list:
    return [Withheld(*item) for item in meta.get("withheld") or []]


def remember_withheld(project_root: Path, run_id: str, summary: dict, taken_as_they_are: list) -> None:
    """Withheld files into meta.json. Dropped from it: those now in the files dir, and those the patterns of a
    --current fetch (`taken_as_they_are`) select, deleted ones too: the user took the host's state."""
    meta = find_run(project_root, run_id)
    here = set(summary["files"]) | set(summary["kept"])
    accepted = [pattern_parts(pattern) for pattern in taken_as_they_are]
    before = recorded_withheld(meta)
    withheld = {item.path: item for item in before if item.path not in here
                and not any(matches(parts, item.path.split("/")) for parts in accepted)}
    withheld.update({item.path: item for item in summary["withheld"]})
    if withheld or before:
        record_of(project_root, meta).update(withheld=[list(withheld[path]) for path in sorted(withheld)])


def refuse_withheld(run_id: str, withheld: list) -> None:
    """--resume puts back the run's own files or none: a checkpoint a later run replaced would resume that one."""
    if not withheld:
        return
    item = withheld[0]
    by = f"run {item.by_run}" if item.by_run else "someone on the host"
    more = f" (and {len(withheld) - 1} more)" if len(withheld) > 1 else ""
    if item.reason == DELETED:
        raise OffloadError(f"run {run_id}'s {item.path} was deleted by {by} since{more}: resuming would not put it back",
                           hint=f"resume another run, or take the host's files as they are: offload fetch {run_id} --current")
    raise OffloadError(f"run {run_id}'s {item.path} was changed by {by} since{more}: resuming would put back another version",
                       hint=f"fetch it with offload fetch {run_id} --current first")
