"""What a sync finds on the host before the laptop plans it: what stands at each path earlier syncs put there.

The laptop compares [kind, size, mtime_ns, mode, target] with its own files (description_of); the host
compares what it recorded with what is there now (records.identity_of), to name the paths that changed on the
host since they were synced: kept, unless the sync is forced.
"""
from __future__ import annotations

import os
import stat

from .fence import OutsideProject
from .records import identity_of, kind_of, matches


def describe(path: str) -> list | None:
    """[kind, size, mtime_ns, mode, target] of what is at path, or None."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # the latter: a file now stands where a parent dir was
        return None
    return description_of(st, path)


def description_of(st: os.stat_result, path: str) -> list:
    """What the laptop compares with its own file (records.identity_of is what the host compares)."""
    kind, mode = kind_of(st), stat.S_IMODE(st.st_mode)
    return [kind, st.st_size if kind == "file" else 0, st.st_mtime_ns, mode,
            os.readlink(path) if kind == "link" else ""]


def manifest(target) -> dict:
    """Of a files.Target: what is at the paths syncs put there, `changed`: synced paths that are no longer what
    the sync wrote, `refused`: those a link now leads out of the project."""
    present, changed, refused = {}, [], []
    for relpath, record in target.records.paths.items():
        try:
            path = target.path(relpath)
        except OutsideProject as exc:
            refused.append([relpath, str(exc)])
            continue
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        present[relpath] = description_of(st, path)
        if record is not None and not matches(record, identity_of(st, path)):
            changed.append(relpath)
    return {"present": present, "synced": sorted(target.records.paths), "changed": sorted(changed),
            "refused": refused, "stage": target.stage.id if target.stage else None}
