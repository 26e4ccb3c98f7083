"""A project's last selection, reused while nothing the scan read has changed: a no-change sync of a big tree
then costs nothing that grows with the tree (an inotify watch saw no change), or where no watch can be had
one lstat per path, without the ignore rules, instead of a whole scan.

The scan names every directory it listed and every file it described or read rules from (Witness). Each is
kept with its lstat signature: mode, size, mtime, ctime and inode, ctime being set by the kernel on any change
to a file's bytes or metadata and never by a tool that restores mtimes. A directory's signature changes when a
child is created, removed or renamed. So the selection is reused only when every signature is as it was;
anything else scans again. Like git's racily clean index entries, a scan that saw a change less than
RACY_NS before it started is not kept: a second change within the filesystem's timestamp granularity would
leave the signature as it was.

An inotify watch (remote_agent/tree_watch.py, the agent's own: synchronous, every directory's watch checked,
an overflow a change) is set on each directory as the scan comes to it, before it is listed, so a change the
scan did not see shows; a path seen before the watch on its directory (offload.yaml, .git/info/exclude) is
checked again once that watch is set. The next sync then costs nothing that grows with the tree. Any event in
those directories sends the next sync to a check path by path, which starts a new watch before it checks.
macOS, a network filesystem or too many directories: the check path by path every time.

The cache lives in the process: the link keeper, which runs every command of a laptop, keeps it between syncs.
"""
from __future__ import annotations

import heapq
import os
import stat
import time
from array import array
from pathlib import Path

from remote_agent.tree_watch import TreeWatch

from offload.sync.scan import lstat_or_none

RACY_NS = 2_000_000_000  # coarser than any filesystem's timestamps (FAT's 2 s) and than a kernel tick
RECENT_FIRST = 64  # the most recently changed paths are checked first: an edited file is found at once
MAX_PROJECTS = 8  # selections kept; the oldest goes first ...
MAX_PATHS = 300_000  # ... and while they hold more paths than this (about 150 MB of the keeper's), the newest aside

_kept: dict = {}  # (root, includes) -> Kept


class Witness:
    """What a scan read: relative paths ("" for the root) and a hash of each one's lstat signature (absent: all
    zero). 8 bytes a path beside the path itself, which the selection's entries share."""

    def __init__(self, root: str):
        self.root, self.started_ns = root, time.time_ns()
        self.paths: list = []
        self.hashes = array("q")
        self.ctimes: list = []  # (ctime_ns, index) of the RECENT_FIRST most recently changed paths
        self.newest_ctime = 0
        self.dirs: set = set()  # the directories among paths: a watch on them sees any change to the rest
        self.parents: set = set()  # the directories above paths that are not among them (.git/info)
        self.unwatched: list = []  # the indices of paths seen before a watch on their directory was set
        self.live = TreeWatch.open(root)  # the watch set as the scan goes (None: there can be none)

    def saw(self, relpath: str, st: os.stat_result | None) -> None:
        index = len(self.paths)
        self.paths.append(relpath)
        if st is not None and stat.S_ISDIR(st.st_mode):
            if relpath not in self.dirs and self.live is not None and not self.live.add(self.absolute(relpath)):
                self.live = None  # refused (too many directories): the next sync checks path by path
            self.dirs.add(relpath)
        else:
            parent = relpath.rpartition("/")[0]
            if parent not in self.dirs:
                self.parents.add(parent)
                self.unwatched.append(index)
        self.hashes.append(hash(signature(st)))
        ctime = st.st_ctime_ns if st is not None else 0
        self.newest_ctime = max(self.newest_ctime, ctime)
        if len(self.ctimes) < RECENT_FIRST:
            heapq.heappush(self.ctimes, (ctime, index))
        elif ctime > self.ctimes[0][0]:
            heapq.heapreplace(self.ctimes, (ctime, index))

    def saw_path(self, relpath: str) -> None:
        """A file read for what it says (an ignore file, offload.yaml), there or not."""
        self.saw(relpath, lstat_or_none(self.absolute(relpath)))

    def absolute(self, relpath: str) -> str:
        return os.path.join(self.root, relpath) if relpath else self.root

    def settled(self) -> bool:
        """Whether nothing the scan saw changed too close to its start to be told apart from a later change."""
        return self.newest_ctime < self.started_ns - RACY_NS

    def parent_directories(self) -> set:
        """The nearest existing directory above each path seen in a directory that was not (a missing
        .git/info: its creation shows in .git)."""
        directories = set()
        for parent in self.parents - self.dirs:
            directory = self.absolute(parent)
            while not os.path.isdir(directory) and len(directory) > len(self.root):
                directory = os.path.dirname(directory)
            directories.add(directory)
        return directories

    def watch(self) -> TreeWatch | None:
        """A new inotify watch on every directory seen and each parent directory; None where there can be none."""
        return TreeWatch.start(self.root, {*map(self.absolute, self.dirs), *self.parent_directories()})

    def scan_watch(self) -> TreeWatch | None:
        """The watch set as the scan went, once it covers every path seen (each path seen before the watch on
        its directory is still as it was), or None (closed)."""
        live, self.live = self.live, None
        if live is None:
            return None
        watched = set(map(self.absolute, self.dirs))
        if all(live.add(directory) for directory in self.parent_directories() - watched) \
                and all(self.as_seen(index) for index in self.unwatched):
            return live
        live.close()
        return None

    def as_seen(self, index: int) -> bool:
        return hash(signature(lstat_or_none(self.absolute(self.paths[index])))) == self.hashes[index]

    def unchanged(self) -> bool:
        """Whether every path is still as the scan saw it; the most recently changed first. One lstat a path,
        inlined: this loop is the whole cost of a no-change sync's scan."""
        recent = [index for _, index in sorted(self.ctimes, reverse=True)]
        paths, hashes, prefix, lstat = self.paths, self.hashes, self.root + os.sep, os.lstat
        for index in [*recent, *range(len(paths))]:
            relpath = paths[index]
            try:
                st = lstat(prefix + relpath if relpath else self.root)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is None:
                if hashes[index] != ABSENT:
                    return False
            elif hash((st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)) != hashes[index]:
                return False
        return True


class Kept:
    def __init__(self, selection, witness: Witness, watch: TreeWatch | None):
        self.selection, self.witness = selection, witness
        self.watch = watch  # the scan's own, or the one a check path by path that found nothing changed set

    def still_valid(self) -> bool:
        """O(1) while the watch saw nothing; else path by path, with a new watch started first, so that a
        change made during the check is seen by the next one."""
        if self.watch is not None and self.watch.quiet():
            return True
        self.close()
        watch = self.witness.watch()
        if self.witness.unchanged():
            self.watch = watch
            return True
        if watch is not None:
            watch.close()
        return False

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None


def signature(st: os.stat_result | None) -> tuple:
    if st is None:
        return (0, 0, 0, 0, 0)
    return st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


ABSENT = hash(signature(None))


def cached_selection(root: Path, includes: tuple, select):
    """select(witness) -> Selection, called only when the last selection of root with these includes may
    be stale; otherwise that selection (Kept.still_valid)."""
    key = (os.fspath(root), includes)
    kept = _kept.pop(key, None)
    if kept is not None and kept.still_valid():
        _kept[key] = kept  # now the most recently used
        return kept.selection
    witness = Witness(os.fspath(root))
    try:
        selection = select(witness)
    except BaseException:
        if witness.live is not None:
            witness.live.close()
        raise
    watch = witness.scan_watch()
    if not witness.settled():
        if watch is not None:
            watch.close()
        return selection
    _kept[key] = Kept(selection, witness, watch)
    while len(_kept) > MAX_PROJECTS or (len(_kept) > 1 and sum(len(k.witness.paths) for k in _kept.values())
                                          > MAX_PATHS):
        _kept.pop(next(iter(_kept))).close()
    return selection


def forget_all() -> None:
    """Drop every kept selection (tests; a keeper that must not trust what it saw)."""
    for kept in _kept.values():
        kept.close()
    _kept.clear()
