"""git's ignore rules, read without calling git (the project may not be a repository, and git may be absent).

`.gitignore` at any depth, `.git/info/exclude`, plus `.offloadignore` files in the same syntax that win over
`.gitignore` at their level: each directory's files are one RuleLevel, and the deepest level that matches a
path decides it. The walk that applies them is scan.py.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

ALWAYS_EXCLUDED_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", ".offload"})  # at any depth
IGNORE_FILE_NAMES = (".gitignore", ".offloadignore")  # same level: the later file wins
INFO_EXCLUDE = ".git/info/exclude"  # lowest precedence of all, as in git

# pathspec ends most pattern regexes with this group: "the pattern matched here; what follows is a descendant".
# Patterns without it (`logs/**`, `*`) are open prefixes whose regex already covers everything below.
_DIR_MARK = "(?P<ps_d>/)"


@dataclass(frozen=True)
class Rule:
    """One pattern line of an ignore file, matching a path itself as git's wildmatch does, never its descendants
    (the walk takes care of those, so a deeper `!` can re-include what a shallower pattern's prefix would hide)."""

    source: str  # "sub/.gitignore", relative to the project root
    line: int
    text: str  # the pattern as written
    excludes: bool  # False for a "!" pattern, which re-includes
    file_regex: re.Pattern  # searched in the path of a file or symlink
    dir_regex: re.Pattern  # searched in the path of a directory

    def matches(self, relpath: str, is_dir: bool) -> bool:
        return (self.dir_regex if is_dir else self.file_regex).search(relpath) is not None


@dataclass(frozen=True)
class RuleLevel:
    """The rules read in one directory; their patterns are relative to it."""

    base: str  # "" for the project root
    rules: tuple[Rule, ...]
    # One search tells whether any rule matches at all, so the usual unmatched path costs one search per level.
    any_file_rule: re.Pattern
    any_dir_rule: re.Pattern


def rule_level(base: str, rules: tuple[Rule, ...]) -> RuleLevel:
    def any_of(regexes: list[re.Pattern]) -> re.Pattern:
        return re.compile("|".join(f"(?:{regex.pattern})" for regex in regexes) or "(?!)")

    return RuleLevel(base, rules, any_of([rule.file_regex for rule in rules]),
                     any_of([rule.dir_regex for rule in rules]))


def parse_rules(text: str, source: str) -> tuple[Rule, ...]:
    """Compile the lines of an ignore file; comments, blank lines and malformed patterns are dropped, as git does."""
    rules = []
    for line_number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = line.removesuffix("\r")
        pattern_text = line
        if line.rstrip(" ").endswith("/**/"):  # pathspec reads `a/**/` as `a/` itself; git means the dirs in a
            pattern_text = line.rstrip(" ") + "*/"
        try:
            pattern = GitIgnoreSpecPattern(pattern_text)
        except (ValueError, re.error):  # e.g. an invalid range `[z-a]`, which git silently discards
            continue
        if pattern.include is None:
            continue
        prefix_regex = pattern.regex.pattern
        if _DIR_MARK in prefix_regex:
            # Anchored at the end: a file's path never ends in the mark, a directory's path ends right there.
            file_regex = re.compile(f"(?:{prefix_regex.replace(_DIR_MARK, '(?!)')})\\Z")
            dir_regex = re.compile(f"(?:{prefix_regex.replace(_DIR_MARK, '')})\\Z")
        else:
            file_regex = dir_regex = pattern.regex
        rules.append(Rule(source, line_number, line, pattern.include, file_regex, dir_regex))
    return tuple(rules)


def excluded_by(levels: list[RuleLevel], relpath: str, is_dir: bool) -> str | None:
    """Why relpath (its parent directories already walked and kept) is excluded, or None when it is kept."""
    decision = deciding_rule(levels, relpath, is_dir)
    if isinstance(decision, Rule):
        return f"{decision.source}:{decision.line}: {decision.text}"
    return decision


def deciding_rule(levels: list[RuleLevel], relpath: str, is_dir: bool) -> Rule | str | None:
    """The excluding Rule that decides relpath, a "built-in rule: NAME" text, or None when it is kept."""
    name = relpath.rpartition("/")[2]
    if name == ".git" or (is_dir and name in ALWAYS_EXCLUDED_DIRS):  # a `.git` file is a worktree pointer
        return f"built-in rule: {name}{'/' if is_dir else ''}"
    for level in reversed(levels):  # deeper levels first
        path_in_level = relpath[len(level.base) + 1 :] if level.base else relpath
        if not (level.any_dir_rule if is_dir else level.any_file_rule).search(path_in_level):
            continue
        for rule in reversed(level.rules):  # last matching line wins
            if rule.matches(path_in_level, is_dir):
                return rule if rule.excludes else None
    return None


def root_levels(root_dir: str) -> list[RuleLevel]:
    """The levels in force before the walk reads any directory's files: .git/info/exclude, lowest of all."""
    return [rule_level("", read_rules(os.path.join(root_dir, INFO_EXCLUDE), INFO_EXCLUDE))]


def explain(root: Path, relpath: str) -> str | None:
    """Which rule keeps relpath off the host ("file:line: pattern"), or None when it is synced."""
    root_dir = os.fspath(root)
    levels = root_levels(root_dir)
    parts = [part for part in relpath.strip("/").split("/") if part not in ("", ".")]
    for depth in range(len(parts)):
        path = "/".join(parts[: depth + 1])
        is_last = depth == len(parts) - 1
        is_dir = not is_last or _is_real_dir(os.path.join(root_dir, path))
        parent = "/".join(parts[:depth])
        levels_here = levels + levels_in(os.path.join(root_dir, parent), parent)
        reason = excluded_by(levels_here, path, is_dir)
        if reason is not None:
            return reason if is_last else f"{reason} (excludes its directory {path}/)"
        levels = levels_here
    return None


def levels_in(abs_dir: str, rel_dir: str, children: list[os.DirEntry] | None = None) -> list[RuleLevel]:
    """The rule level a directory's own ignore files define, as a list of zero or one."""
    if children is None:
        try:
            with os.scandir(abs_dir) as listing:
                children = list(listing)
        except (FileNotFoundError, NotADirectoryError):
            return []
    present = {child.name for child in children if child.name in IGNORE_FILE_NAMES
               and child.is_file(follow_symlinks=False)}  # git refuses symlinked ignore files too
    rules: tuple[Rule, ...] = ()
    for name in IGNORE_FILE_NAMES:
        if name in present:
            source = f"{rel_dir}/{name}" if rel_dir else name
            rules += read_rules(os.path.join(abs_dir, name), source)
    return [rule_level(rel_dir, rules)] if rules else []


def read_rules(path: str, source: str) -> tuple[Rule, ...]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as ignore_file:
            return parse_rules(ignore_file.read(), source)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ()


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
