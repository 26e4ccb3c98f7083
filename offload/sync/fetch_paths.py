"""Where fetched bytes may land on the laptop: the host sends them, it never chooses where they go.

Every path a host lists is checked before anything is written: it must be plain (relative; no `..`, `.` or
empty parts; no backslash or NUL), be one the patterns asked for (matched exactly as the host matches them),
and lie outside `.git/` and `.offload/` (a hook there runs code on the next commit; a run record there is
what --resume trusts). One path that strays refuses the whole listing: a host that lists one is not to be
believed about the rest. Each file's place is then kept inside its destination: no parent of it may be a
symlink that leads out, and it is never itself a symlink to write through.
"""
from __future__ import annotations

import os
from pathlib import Path

from remote_agent.fetching import matches, pattern_parts

from offload.errors import OffloadError

NEVER_WRITTEN = (".git", ".offload")  # at any depth, in any case: a Mac's disk takes .GIT for .git
INTO_RECORDS = "offload never writes into .git/ or .offload/"
STRAY_HINT = "the host (or what runs there) is not the offload agent it should be: check it before fetching from it again"


def plain_parts(relpath) -> list | None:
    """The components of a plain relative "/"-separated path, or None when it is not one."""
    if not isinstance(relpath, str) or not relpath or relpath.startswith("/") or "\0" in relpath or "\\" in relpath:
        return None
    parts = relpath.split("/")
    return None if any(part in ("", ".", "..") for part in parts) else parts


def never_written(parts: list) -> bool:
    return any(part.casefold() in NEVER_WRITTEN for part in parts)


def why_stray(patterns: list, relpath) -> str | None:
    """Pure: why fetch must not write `relpath` for these patterns (already checked with pattern_parts), or None."""
    parts = plain_parts(relpath)
    if parts is None:
        return "it is not a plain path inside the project"
    if not any(matches(pattern_parts(pattern), parts) for pattern in patterns):
        return f"it matches none of the patterns asked for: {' '.join(patterns)}"
    return INTO_RECORDS if never_written(parts) else None


def first_stray(patterns: list, relpaths: list) -> tuple | None:
    """Pure: (relpath, reason) for the first path of a listing that fetch must not write, or None."""
    listed = set()
    for relpath in relpaths:
        reason = why_stray(patterns, relpath)
        if reason is not None:
            return relpath, reason
        listed.add(relpath)
    for relpath in relpaths:  # a file cannot also be a directory of another listed file
        parts = relpath.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in listed:
                return relpath, f"{'/'.join(parts[:depth])} is listed as a file too"
    return None


def check_listing(patterns: list, relpaths: list, label: str) -> None:
    """Refuse, in one line naming the path and the host, a listing that holds a path fetch must not write."""
    stray = first_stray(patterns, relpaths)
    if stray is None:
        return
    relpath, reason = stray
    # an honest host may list a .git/ that a run made under out/; anything else no offload agent lists
    hint = "narrow the patterns to leave it out" if reason == INTO_RECORDS else STRAY_HINT
    raise OffloadError(f"{label} listed {relpath!r}, which this fetch may not write ({reason}); nothing was fetched",
                       hint=hint)


def destination(dest: Path, relpath: str) -> Path:
    """Where `relpath` (checked plain) goes under dest: refused when a parent is a symlink leading out of dest,
    or is not a directory, or when the place itself is a symlink."""
    place = dest.joinpath(*relpath.split("/"))
    real_dest = os.path.realpath(dest)
    real_parent = os.path.realpath(place.parent)  # resolves the links among the parents that exist
    if os.path.commonpath([real_dest, real_parent]) != real_dest:
        raise OffloadError(f"{place.parent} leads to {real_parent}, outside {dest}: offload does not write through it",
                           hint="remove the symlink, or fetch with --to DIR")
    for parent in reversed(place.parents):
        if parent == dest or not parent.is_relative_to(dest):
            continue
        if os.path.lexists(parent) and not parent.is_dir():
            raise OffloadError(f"{parent} is a file here, but {relpath} needs it to be a directory",
                               hint="move the file away, or fetch with --to DIR")
    if place.is_symlink():
        raise OffloadError(f"{place} is a symlink here: offload does not write through it",
                           hint="remove the symlink, or fetch with --to DIR")
    return place
