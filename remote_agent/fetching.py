"""The host side of `offload fetch`: list the files that match glob patterns, with their SHA-256, and
stream one of them from an offset.

Every path is resolved here, on the host, with realpath: a pattern that is absolute or climbs with `..`,
and a symlink (to a file or a directory, anywhere in the path) that leads outside the run's project
directory, are refused whatever the laptop asked for. Hashes are cached (see hashes.py), so fetching a
large checkpoint a second time does not read it again on the host.
"""
from __future__ import annotations

import fnmatch
import os
import stat
import time

from . import host_dirs, outputs, protocol
from .hashes import HashCache
from .protocol import PART_SUFFIX, RequestError, send_blob

RECORDS_DIR = ".offload"  # run records and caches: only a pattern that names it literally reaches it
TICK_S = 2.0  # while hashing, a tick this often tells the laptop the link is alive
MAGIC = ("*", "?", "[")


def pattern_parts(pattern: str) -> list:
    """The components of a pattern (or path) relative to the project; absolute, `..` and empty ones refused."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise RequestError("refused", "refusing an empty pattern")
    if "\0" in pattern:
        raise RequestError("refused", f"refusing {pattern!r}: it holds a NUL byte")
    if pattern.startswith(("/", "~")):
        raise RequestError("refused", f"refusing {pattern}: it is absolute; patterns are relative to the run's project directory")
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise RequestError("refused", f"refusing {pattern}: it contains `..`; patterns stay inside the run's project directory")
    if not parts:
        raise RequestError("refused", f"refusing {pattern}: it names the project directory itself (use ** for everything)")
    return parts


def project_root(project_dir: str) -> str:
    root = os.path.realpath(host_dirs.absolute(project_dir, "the run's project directory"))
    if not os.path.isdir(root):
        raise RequestError("no_project", f"the run's project directory {project_dir} is not on the host (any more)")
    return root


def inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def contained(root: str, path: str, relpath: str) -> str:
    """The real path of `path`, which must lie inside the project `root` (itself a real path)."""
    real = os.path.realpath(path)
    if not inside(real, root):
        raise RequestError("refused", f"refusing {relpath}: it resolves to {real}, outside the run's project directory {root}")
    return real


def join_relative(relpath: str, name: str) -> str:
    return f"{relpath}/{name}" if relpath else name


class Matcher:
    """Expands patterns under a project's real root: `**` spans any number of directories, `*`, `?` and
    `[...]` stay within one name and match dot files too. Matching a directory takes everything beneath it."""

    def __init__(self, root: str):
        self.root = root
        self.found = {}

    def expand(self, parts: list) -> dict:
        """relpath -> real path of each regular file the pattern's components match."""
        self.found = {}
        self._expand(self.root, "", parts, (self.root,))
        return self.found

    def _expand(self, directory: str, relpath: str, parts: list, ancestors: tuple) -> None:
        head, rest = parts[0], parts[1:]
        if head == "**":
            if not rest:
                self._take_tree(directory, relpath, ancestors)
                return
            self._expand(directory, relpath, rest, ancestors)
            for child_rel, child_real in self._children(directory, relpath):
                if os.path.isdir(child_real) and child_real not in ancestors:  # a link to an ancestor would loop
                    self._expand(child_real, child_rel, parts, ancestors + (child_real,))
            return
        if any(mark in head for mark in MAGIC):
            chosen = self._children(directory, relpath, head)
        else:
            path = os.path.join(directory, head)
            rel = join_relative(relpath, head)
            chosen = [(rel, contained(self.root, path, rel))] if os.path.lexists(path) else []
        for rel, real in chosen:
            if rest:
                if os.path.isdir(real) and real not in ancestors:
                    self._expand(real, rel, rest, ancestors + (real,))
            else:
                self._take(real, rel, ancestors)

    def _children(self, directory: str, relpath: str, wanted: str = "*") -> list:
        """(relpath, real path) of each entry whose name matches `wanted`, checked to stay inside; offload's
        own part files and records left out."""
        found = []
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(PART_SUFFIX) or (not relpath and entry.name == RECORDS_DIR):
                    continue
                if wanted != "*" and not fnmatch.fnmatchcase(entry.name, wanted):
                    continue
                rel = join_relative(relpath, entry.name)
                # `directory` is real, so only a symlink can lead elsewhere
                real = contained(self.root, entry.path, rel) if entry.is_symlink() else entry.path
                found.append((rel, real))
        return found

    def _take(self, real: str, relpath: str, ancestors: tuple) -> None:
        if os.path.isdir(real):
            if real not in ancestors:  # a link to a directory above it would loop
                self._take_tree(real, relpath, ancestors + (real,))
        elif os.path.isfile(real):
            self.found[relpath] = real
        # anything else (a fifo, a socket, a dangling link inside the project) is no file to fetch

    def _take_tree(self, directory: str, relpath: str, ancestors: tuple) -> None:
        for rel, real in self._children(directory, relpath):
            if os.path.isdir(real):
                if real not in ancestors:
                    self._take_tree(real, rel, ancestors + (real,))
            elif os.path.isfile(real):
                self.found[rel] = real


class Ticker:
    def __init__(self, send):
        self.send, self.last = send, time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last > TICK_S:
            self.send("tick")
            self.last = time.monotonic()


def matches(parts: list, path_parts: list) -> bool:
    """Pure: whether a pattern's components select a path (as Matcher would, had the file been there)."""
    if not parts:
        return True  # the pattern named a directory above the path: it takes everything beneath
    if parts[0] == "**":
        return matches(parts[1:], path_parts) or (bool(path_parts) and matches(parts, path_parts[1:]))
    return bool(path_parts) and fnmatch.fnmatchcase(path_parts[0], parts[0]) and matches(parts[1:], path_parts[1:])


def list_files(project_dir: str, patterns: list, send, run_dir: str | None = None, current: bool = False) -> dict:
    """The reply to `list_files`: project_dir, files ([relpath, size, mtime_ns, sha256] of each file the patterns
    match) and unmatched patterns. Given the run_dir of a run and not `current`: only the versions that run left,
    the rest as `withheld` (protocol.Withheld), and `own_versions`, False when the run has no record."""
    root = project_root(project_dir)
    parsed = [(pattern, pattern_parts(pattern)) for pattern in patterns]  # all refused before any is expanded
    matched, unmatched = {}, []
    for pattern, parts in parsed:
        found = Matcher(root).expand(parts)
        matched.update(found)
        if not found:
            unmatched.append(pattern)
    cache, tick = HashCache(root), Ticker(send)
    files = []
    for relpath in sorted(matched):
        real = matched[relpath]
        sha = cache.sha256(real, tick)
        st = os.stat(real)
        files.append([relpath, st.st_size, st.st_mtime_ns, sha])
    cache.save()
    reply = {"project_dir": root, "files": files, "unmatched": unmatched}
    return reply if run_dir is None or current else only_the_runs_own(reply, run_dir, parsed)


def only_the_runs_own(reply: dict, run_dir: str, parsed: list) -> dict:
    """The listing cut to run_dir's own versions (see outputs.py); as it is, marked so, when the run has no record."""
    record_path = os.path.join(host_dirs.absolute(run_dir, "a run directory"), outputs.OUTPUTS)
    run = outputs.load(record_path)
    if run is None:
        return {**reply, "own_versions": False}
    present = {relpath: sha for relpath, _, _, sha in reply["files"]}

    def wanted(relpath: str) -> bool:  # for the run's files that are gone: no Matcher finds those
        return any(matches(parts, relpath.split("/")) for _, parts in parsed)

    listed, withheld = outputs.own_versions(run, outputs.load_others(reply["project_dir"], record_path), present, wanted)
    listed = set(listed)
    unmatched = [pattern for pattern, parts in parsed if pattern in reply["unmatched"]
                 and not any(matches(parts, item.path.split("/")) for item in withheld)]
    return {**reply, "files": [entry for entry in reply["files"] if entry[0] in listed], "unmatched": unmatched,
            "own_versions": True, "withheld": withheld}


def read_file(project_dir: str, relpath: str, offset: int, end, send, out) -> None:
    """Stream bytes [offset, end) of one file as `file_chunk` blobs (fewer if it is shorter now), then `file_end`."""
    root = project_root(project_dir)
    path = os.path.join(root, *pattern_parts(relpath))
    real = contained(root, path, relpath)
    with open(real, "rb") as f:
        opened = os.fstat(f.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise RequestError("not_a_file", f"{relpath} is not a regular file on the host")
        now = os.stat(contained(root, path, relpath))  # swapped for a link between the check and the open?
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            raise RequestError("busy", f"{relpath} was replaced while it was being opened; fetch again")
        position = max(0, int(offset))
        f.seek(position)
        while end is None or position < end:
            data = f.read(protocol.CHUNK if end is None else min(protocol.CHUNK, end - position))
            if not data:
                break
            send_blob(out, "file_chunk", position, data)
            position += len(data)
        send("file_end", offset=position, size=os.fstat(f.fileno()).st_size)
