"""The project directory is a fence: no host-side path operation of a sync follows a symlink out of it.

A host may have `data -> /datasets/owt` in a project (its owner made it there). Writing, patching or
deleting `data/x.bin` through that link would change a dataset offload never wrote, so every parent of a
path is resolved here, one component at a time with lstat: a parent that is a symlink must resolve inside
the project (then the path is taken through its real location), or the path is refused naming the link.
The last component is never followed: the callers lstat, unlink, rename and open it with O_NOFOLLOW.
The project's `.offload/` (the agent's records, locks and staged trees) is no sync's path, by name (files.py)
or through a link: a parent that resolves into it is refused in the same way.
"""
from __future__ import annotations

import os
import stat


RECORDS_DIR = ".offload"


class OutsideProject(Exception):
    """A path whose parent is a symlink leading out of the project."""

    def __init__(self, relpath: str, link: str, target: str, message: str | None = None):
        super().__init__(message or f"{link} on the host is a symlink to {target}, outside the project: "
                                    f"offload does not follow it (left {relpath} alone)")
        self.relpath, self.link, self.target = relpath, link, target


class IntoRecords(OutsideProject):
    """A path that a symlink leads into the project's own records, which no sync writes."""

    def __init__(self, relpath: str, reached: str):
        super().__init__(relpath, reached, RECORDS_DIR, f"{reached} on the host is offload's own records "
                         f"({RECORDS_DIR}/) through a symlink: offload does not follow it (left {relpath} alone)")


class Fence:
    """Resolves relative paths under one project root; parents already checked are remembered for the
    fence's life (one sync), so 10,000 files in one directory cost one check of that directory."""

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self.records = os.path.join(self.root, RECORDS_DIR)
        self.checked = {"": self.root}  # relative directory -> its real path

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip("/") + "/")

    def in_records(self, real: str) -> bool:
        return real == self.records or real.startswith(self.records + "/")

    def parent_of(self, relpath: str) -> str:
        """The real path of relpath's parent directory (which may not exist yet)."""
        parent_rel = relpath.rpartition("/")[0]
        found = self.checked.get(parent_rel)
        if found is not None:
            return found
        parts = parent_rel.split("/")
        real = self.root
        for depth, part in enumerate(parts, start=1):
            rel = "/".join(parts[:depth])
            known = self.checked.get(rel)
            if known is not None:
                real = known
                continue
            candidate = os.path.join(real, part)
            try:
                info = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                info = None  # created later by makedirs, below a parent already checked
            if info is not None and stat.S_ISLNK(info.st_mode):
                resolved = os.path.realpath(candidate)
                if not self.inside(resolved):
                    raise OutsideProject(relpath, rel, os.readlink(candidate))
                candidate = resolved
            if self.in_records(candidate):  # through a link: `link/x` (link -> .offload), `link/.offload/x` (-> .)
                raise IntoRecords(relpath, rel)
            real = candidate
            if info is not None:  # a missing one is not remembered: it may yet be made a symlink by someone else
                self.checked[rel] = real
        return real

    def path(self, relpath: str) -> str:
        """Where relpath lives, its parents resolved inside the project; its last component unresolved."""
        found = f"{self.parent_of(relpath)}/{relpath.rpartition('/')[2]}"  # parents are absolute, never "/"-ended
        if found == self.records:
            raise IntoRecords(relpath, relpath)
        return found

    def forget(self) -> None:
        """Parents may have changed (a delete removed a directory, a put replaced a link): check again."""
        self.checked = {"": self.root}
