"""Which files of a project get synced to the host: a walk of the tree under git's ignore rules (ignore.py).

Like git we walk the tree and never descend into an excluded directory, which is also why nothing inside an
excluded directory can be re-included.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from offload.console import human_size
from offload.sync.ignore import IGNORE_FILE_NAMES, INFO_EXCLUDE, RuleLevel, deciding_rule, levels_in, root_levels

# Files that keep a directory in git without being project files: they do not make it "hold synced files".
PLACEHOLDER_NAMES = frozenset({".gitignore", ".offloadignore", ".gitkeep", ".keep"})


@dataclass(frozen=True)
class LocalEntry:
    path: str  # POSIX relative path, e.g. "config/train.py"
    kind: str  # "file", "dir" (only for directories with nothing synced below, so they are recreated), or "link"
    size: int  # bytes for files, 0 otherwise
    mtime_ns: int  # st_mtime_ns (lstat)
    mode: int  # permission bits (st_mode & 0o7777)
    target: str = ""  # symlink target (os.readlink) for links


def scan_project(root: Path, on_dir=None, seen=None) -> list[LocalEntry]:
    """Every file, link and otherwise-empty directory the ignore rules keep, sorted by path (on_dir: see
    _scan_dir; selection.py uses it to see what the rules left out). seen(relpath, lstat result or None), when
    given, hears of every directory listed and every file described or read (scan_cache.py)."""
    root_dir = os.fspath(root)
    if seen is not None:  # each file that rules are read from is seen before it is read
        seen(INFO_EXCLUDE, lstat_or_none(os.path.join(root_dir, INFO_EXCLUDE)))
    levels = root_levels(root_dir)
    entries: list[LocalEntry] = []
    _scan_dir(root_dir, "", levels, entries, on_dir, seen)
    entries.sort(key=lambda entry: entry.path)
    return entries


def summarize(entries: list[LocalEntry], top: int = 3) -> str:
    """The one line printed before a sync: file count, total size and the largest files."""
    files = [entry for entry in entries if entry.kind == "file"]
    total = sum(entry.size for entry in files)
    line = f"{len(files)} file{'' if len(files) == 1 else 's'}, {human_size(total)}"
    largest = sorted(files, key=lambda entry: (-entry.size, entry.path))[:top]
    if largest:
        line += "; largest: " + ", ".join(f"{entry.path} ({human_size(entry.size)})" for entry in largest)
    return line


def _scan_dir(abs_dir: str, rel_dir: str, levels: list[RuleLevel], out: list[LocalEntry], on_dir=None,
              seen=None) -> bool:
    """Append what to sync below abs_dir to out; returns whether anything was appended.
    on_dir(rel_dir, levels, excluded, kept_files), when given, hears about each directory once its children
    are scanned: the excluded children as (DirEntry, relpath, is_dir, deciding rule) and how many files
    (placeholders such as .gitignore aside) it keeps."""
    children = _listing(abs_dir, rel_dir, seen)
    levels = levels + levels_in(abs_dir, rel_dir, children)
    synced_any, excluded, kept_files = False, [], 0
    for child in children:
        relpath = f"{rel_dir}/{child.name}" if rel_dir else child.name
        try:
            is_dir = child.is_dir(follow_symlinks=False)
            decision = deciding_rule(levels, relpath, is_dir)
            if decision is not None:
                if on_dir is not None:
                    excluded.append((child, relpath, is_dir, decision))
                continue
            if is_dir:
                info = child.stat(follow_symlinks=False)
                try:
                    has_children = _scan_dir(child.path, relpath, levels, out, on_dir, seen)
                except (FileNotFoundError, NotADirectoryError):  # removed or replaced while we scanned
                    continue
                if not has_children:  # rsync-like: recreate directories that would otherwise vanish
                    out.append(LocalEntry(relpath, "dir", 0, info.st_mtime_ns, stat.S_IMODE(info.st_mode)))
            elif child.is_symlink():
                info = child.stat(follow_symlinks=False)
                if seen is not None:
                    seen(relpath, info)
                out.append(LocalEntry(relpath, "link", 0, info.st_mtime_ns, stat.S_IMODE(info.st_mode),
                                      os.readlink(child.path)))
                kept_files += child.name not in PLACEHOLDER_NAMES
            elif child.is_file(follow_symlinks=False):
                info = child.stat(follow_symlinks=False)
                if seen is not None:
                    seen(relpath, info)
                out.append(LocalEntry(relpath, "file", info.st_size, info.st_mtime_ns, stat.S_IMODE(info.st_mode)))
                kept_files += child.name not in PLACEHOLDER_NAMES
            else:
                continue  # sockets, fifos, devices: nothing a training run needs
        except FileNotFoundError:  # deleted while we scanned: it simply is not part of this sync
            continue
        synced_any = True
    if on_dir is not None:
        on_dir(rel_dir, levels, excluded, kept_files)
    return synced_any


def _listing(abs_dir: str, rel_dir: str, seen) -> list:
    """The directory's entries; seen hears of the directory first (a child added while it is read then changes
    what was seen) and of its ignore files, before levels_in reads them."""
    if seen is not None:
        seen(rel_dir, os.lstat(abs_dir))
    with os.scandir(abs_dir) as listing:
        children = list(listing)
    if seen is not None:
        for child in children:
            if child.name in IGNORE_FILE_NAMES:
                seen(f"{rel_dir}/{child.name}" if rel_dir else child.name, lstat_or_none(child.path))
    return children


def lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
