"""--include / `include:` patterns: files to send whatever the ignore rules say, inside ignored directories too.

Gitignore-style patterns from the project root, checked when given (no `!`, nothing outside the project);
a pattern's literal directories tell the selection which ignored directories are worth walking into.
"""
from __future__ import annotations

import os
from pathlib import Path

from offload.errors import OffloadError
from offload.sync.ignore import parse_rules

GLOB_CHARS = frozenset("*?[\\")


class Includes:
    """--include / include: patterns, gitignore-style from the project root; they reach into ignored dirs."""

    def __init__(self, patterns: list, root: Path | None = None):
        self.patterns = [check_include(pattern, root) for pattern in patterns]
        self.rules = tuple(rule for pattern in self.patterns for rule in parse_rules(pattern, "--include"))
        self.prefixes = [literal_prefix(pattern) for pattern in self.patterns]
        self._dirs: dict[str, bool] = {"": False}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def dir_included(self, relpath: str) -> bool:
        """A pattern names this directory or one above it: everything below is sent."""
        if relpath not in self._dirs:
            parent = relpath.rpartition("/")[0]
            self._dirs[relpath] = self.dir_included(parent) or any(r.matches(relpath, True) for r in self.rules)
        return self._dirs[relpath]

    def file_included(self, relpath: str) -> bool:
        return bool(self.rules) and (any(rule.matches(relpath, False) for rule in self.rules)
                                     or self.dir_included(relpath.rpartition("/")[0]))

    def may_reach(self, relpath: str, named_only: bool = False) -> bool:
        """Whether a pattern could match below directory relpath. named_only (junk directories): only a
        pattern whose literal part names the directory itself, such as `.venv/lib/**`."""
        parts = relpath.split("/")
        for prefix in self.prefixes:
            if prefix is None:
                if not named_only:
                    return True
            elif named_only:
                if len(prefix) >= len(parts) and list(prefix[:len(parts)]) == parts:
                    return True
            elif list(prefix[:len(parts)]) == parts[:len(prefix)]:
                return True
        return False


def check_include(pattern: str, root: Path | None = None) -> str:
    """The pattern relative to the project root, or a one-line error for one that cannot work."""
    text = pattern.strip()
    if root is not None and os.path.isabs(text) and Path(text).is_relative_to(root):
        text = "/" + Path(text).relative_to(root).as_posix()  # a laptop path inside the project
    if not text or "\n" in text or text.startswith("#"):
        raise OffloadError(f"include pattern {pattern!r} is empty or a comment",
                           hint="give a gitignore-style pattern from the project root, e.g. --include 'out/**'")
    if text.startswith("!"):
        raise OffloadError(f"include pattern {pattern!r} starts with '!'",
                           hint="includes only add files; leave files out with .offloadignore")
    if ".." in text.split("/"):
        raise OffloadError(f"include pattern {pattern!r} reaches outside the project",
                           hint="patterns are relative to the project root, e.g. --include 'data/**'")
    return text


def literal_prefix(pattern: str) -> tuple | None:
    """The directories an anchored pattern names before its first wildcard; None for one that matches at any
    depth (no slash but a trailing one, as in git)."""
    body = pattern.rstrip("/")
    if "/" not in body:
        return None
    prefix = []
    for part in body.lstrip("/").split("/"):
        if GLOB_CHARS & set(part):
            break
        prefix.append(part)
    return tuple(prefix)
