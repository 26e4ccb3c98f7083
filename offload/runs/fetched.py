"""What fetch wrote into a run's files dir, and the check --resume makes before it puts any of it back.

--resume copies the run's files dir over the project (on the host, or the laptop's own for a local run), so
what lies there must be what a fetch of that run wrote, and nothing else: each fetch into the files dir adds
the paths it wrote (or found already there, verified) to `fetched.json` beside it, and a file the record
does not name (put there by hand, or by an older offload that did not check the host's listing) refuses
the resume, naming it, before anything is synced or put back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from offload.errors import OffloadError
from offload.runs.record import RUNS_DIR
from offload.runs.withheld import remember_withheld
from offload.sync.fetch import checked_patterns, fetch_into
from offload.sync.fetch_paths import INTO_RECORDS, never_written
from offload.sync.push import scan_all

FILES_DIR = "files"  # under .offload/runs/<run-id>/
FETCHED = "fetched.json"  # .offload/runs/<run-id>/, beside files/


def record_path(files_dir: Path) -> Path:
    return files_dir.parent / FETCHED


def load_fetched(files_dir: Path) -> set | None:
    """The relpaths fetches of the run wrote into files_dir; None when none recorded any."""
    try:
        return set(json.loads(record_path(files_dir).read_text())["paths"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_fetched(files_dir: Path, relpaths: list) -> None:
    """Add what one fetch wrote into files_dir (or verified there) to the record."""
    known = load_fetched(files_dir)
    if known is not None and known.issuperset(relpaths):
        return
    paths = (known or set()) | set(relpaths)
    path = record_path(files_dir)
    tmp = path.with_name(f"{FETCHED}.tmp")
    tmp.write_text(json.dumps({"paths": sorted(paths)}) + "\n")
    os.replace(tmp, path)


def files_to_put_back(files_dir: Path, run_id: str) -> list:
    """The files dir's files (sync.LocalEntry), once every one of them is one a fetch of the run wrote."""

    entries = scan_all(files_dir)  # regular files only: a symlink there is never followed, never put back
    recorded = load_fetched(files_dir)
    if entries and recorded is None:
        raise OffloadError(f"run {run_id}'s files were fetched by an older offload, which kept no record of what "
                           "it wrote: not putting any of them back",
                           hint=f"fetch them again (it records them): offload fetch {run_id}")
    for entry in entries:
        if never_written(entry.path.split("/")):
            reason = f"{INTO_RECORDS}, nor puts back there"
        elif entry.path not in recorded:
            reason = f"no fetch of run {run_id} wrote it"
        else:
            continue
        raise OffloadError(f"run {run_id}'s files dir holds {entry.path} ({reason}): not putting any of them back",
                           hint=f"remove it from {files_dir}, then resume again")
    return entries


def files_dir(project_root: Path, run_id: str) -> Path:
    """Where a run's fetched files go by default: .offload/runs/<run-id>/files/."""
    return project_root / RUNS_DIR / run_id / FILES_DIR


def fetch_run(agent, project_root: Path, meta: dict, patterns: list, to=None, current: bool = False) -> dict:
    """fetch_into the run's files dir (or `to`); into the files dir, what it wrote is remembered beside it, and
    what was withheld in the run's meta.json, so that --resume puts back only those, and not a set that lacks one."""
    if to:
        return fetch_into(agent, meta, patterns, to, current=current)
    dest = files_dir(project_root, meta["run_id"])
    summary = fetch_into(agent, meta, patterns, dest, current=current)
    remember_fetched(dest, summary["files"] + summary["kept"])
    remember_withheld(project_root, meta["run_id"], summary, checked_patterns(patterns) if current else [])
    return summary
