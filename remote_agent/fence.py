"""The project directory is a fence: no host-side path operation of a sync follows a symlink out of it.

A host may have `data -> /datasets/owt` in a project (its owner made it there). Writing, patching or
deleting `data/x.bin` through that link would change a dataset offload never wrote, so every parent of a
path is resolved here, one component at a time with lstat: a parent that is a symlink must resolve inside
the project (then the path is taken through its real location), or the path is refused naming the link.
The last component is never followed: the callers lstat, unlink, rename and open it with O_NOFOLLOW.
"""
from __future__ import annotations

import os
import stat


class OutsideProject(Exception):
    """A path whose parent is a symlink leading out of the project."""

    def __init__(self, relpath: str, link: str, target: str):
        super().__init__(f"{link} on the host is a symlink to {target}, outside the project: "
                         f"offload does not follow it (left {relpath} alone)")
        self.relpath, self.link, self.target = relpath, link, target


class Fence:
    """Resolves relative paths under one project root; parents already checked are remembered for the
    fence's life (one sync), so 10,000 files in one directory cost one check of that directory."""

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self.checked = {"": self.root}  # relative directory -> its real path

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip("/") + "/")

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
                real = candidate  # created later by makedirs, below a parent already checked
                continue  # not remembered: it may yet be made a symlink by someone else
            if stat.S_ISLNK(info.st_mode):
                resolved = os.path.realpath(candidate)
                if not self.inside(resolved):
                    raise OutsideProject(relpath, rel, os.readlink(candidate))
                candidate = resolved
            real = candidate
            self.checked[rel] = real
        return real

    def path(self, relpath: str) -> str:
        """Where relpath lives, its parents resolved inside the project; its last component unresolved."""
        return f"{self.parent_of(relpath)}/{relpath.rpartition('/')[2]}"  # parents are absolute, never "/"-ended

    def forget(self) -> None:
        """Parents may have changed (a delete removed a directory, a put replaced a link): check again."""
        self.checked = {"": self.root}
