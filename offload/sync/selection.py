"""Which files a sync sends: git's ignore rules (ignore.py) as the base, plus data made beside the code,
plus what `--include` / `include:` asks for (includes.py); and a report of what still stays behind.

The one rule added to git's: a git-ignored file is still sent when its directory also holds files that are
synced, because that is where scripts leave what they prepared (data/shakespeare_char/train.bin beside
prepare.py). Never by that rule: a file inside an ignored directory, junk (bytecode, caches, editor and OS
files, virtualenvs, egg-info), secrets, or a file a `.offloadignore` excludes; and only up to a data budget.
What git's rules still leave out is reported, walking into ignored directories a bounded number of entries.
"""
from __future__ import annotations

import fnmatch
import os
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

from offload.config import project as project_config
from offload.console import human_size
from offload.sync.ignore import Rule, deciding_rule, rule_level
from offload.sync.includes import Includes
from offload.sync.scan import PLACEHOLDER_NAMES, LocalEntry, lstat_or_none, scan_project
from offload.sync.scan_cache import Witness, cached_selection

DEFAULT_DATA_BUDGET = 2 * 1024**3  # bytes the beside-rule may add; above it the larger files stay behind
REPORT_ENTRY_LIMIT = 20_000  # entries looked at inside ignored directories for the report: a huge tree costs little
SHOWN = 3  # files or directories named in one line
NEVER_SENT_DIRS = frozenset({".git", ".offload"})  # not even by --include
JUNK_DIR_NAMES = frozenset({
    ".git", ".offload", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    ".ipynb_checkpoints", ".idea", ".vscode", ".vs", ".tox", ".nox", ".eggs", ".hypothesis", "node_modules",
    ".ssh", ".aws", ".gnupg",  # secrets, by the directory
})
JUNK_FILE_PATTERNS = ("*.pyc", "*.pyo", "*.egg-info", ".DS_Store", "._*", "Thumbs.db", "desktop.ini",
                      "*.swp", "*.swo", "*~", ".#*", "#*#", "Session.vim", ".netrwhist")
SECRET_PATTERNS = (".env*", "*.pem", "*.key", "id_*", ".netrc", "_netrc", "*credentials*", ".pgpass", "*.p12",
                   "*.pfx", ".pypirc")


@dataclass(frozen=True)
class LeftOut:
    path: str
    size: int
    group: str      # the directory it is reported under ("" for the project root)
    whole_dir: bool  # group is an ignored directory, left out whole


@dataclass
class Selection:
    entries: list                                     # LocalEntry: everything to sync, sorted by path
    added: list = field(default_factory=list)        # LocalEntry files sent by the beside-rule
    over_budget: list = field(default_factory=list)  # the beside-rule's files the data budget left out
    included: list = field(default_factory=list)     # LocalEntry files sent only because an include matched
    left_out: list = field(default_factory=list)     # LeftOut: what git's rules left out that could matter
    left_out_capped: bool = False                     # the report stopped after REPORT_ENTRY_LIMIT entries
    data_budget: int = DEFAULT_DATA_BUDGET


def is_junk(name: str, is_dir: bool, abs_path: str = "") -> bool:
    """Bytecode, caches, editor and OS files, virtualenvs (found by their pyvenv.cfg or conda-meta too)."""
    if is_dir:
        if name in JUNK_DIR_NAMES or name.endswith(".egg-info"):
            return True
        return bool(abs_path) and any(os.path.lexists(os.path.join(abs_path, marker))
                                      for marker in ("pyvenv.cfg", "conda-meta"))
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in JUNK_FILE_PATTERNS)


def never_by_rule(name: str) -> bool:
    """A file the beside-rule never sends and the report never names: junk, secrets, ignore-file placeholders."""
    return name in PLACEHOLDER_NAMES or is_junk(name, False) or is_secret(name)


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in SECRET_PATTERNS)


def select_project(root: Path, include: list | tuple = ()) -> Selection:
    """select_files with the project's offload.yaml (`include:`, `data_budget:`) and the command line's includes;
    the last one again while nothing it was made from has changed (scan_cache.py). Callers never change it."""
    root = Path(root).resolve()

    def select(witness: Witness) -> Selection:
        witness.saw_path(project_config.FILE_NAME)
        config = project_config.load(root)
        budget = DEFAULT_DATA_BUDGET if config.data_budget is None else config.data_budget
        return select_files(root, [*(config.include or ()), *include], budget, witness=witness)

    return cached_selection(root, tuple(include), select)


def select_files(root: Path, include: list | tuple = (), data_budget: int = DEFAULT_DATA_BUDGET,
                 report_limit: int = REPORT_ENTRY_LIMIT, witness: Witness | None = None) -> Selection:
    """What a sync sends and what it leaves out (see the module's docstring), from the files on disk;
    witness hears of everything read to decide it."""
    root = Path(root).resolve()
    seen = witness.saw if witness is not None else None
    collector = Collector(Includes(list(include), root), report_limit, seen)
    entries = scan_project(root, on_dir=collector.on_dir, seen=seen)
    for rel_dir, report in sorted(collector.ignored_dirs):
        collector.walk_ignored(os.path.join(os.fspath(root), rel_dir), rel_dir, report)
    added, over_budget, total = [], [], 0
    for entry in sorted(collector.candidates, key=lambda entry: (entry.size, entry.path)):
        # Decided on the candidates' sizes alone, smallest first: the same files go every sync.
        if not over_budget and total + entry.size <= data_budget:
            added.append(entry)
            total += entry.size
        else:
            over_budget.append(entry)
    entries = sorted(entries + added + collector.included, key=lambda entry: entry.path)
    return Selection(entries, sorted(added, key=lambda e: e.path), sorted(over_budget, key=lambda e: e.path),
                     sorted(collector.included, key=lambda e: e.path),
                     sorted(collector.left_out, key=lambda item: item.path), collector.capped, data_budget)


def from_git(decision) -> bool:
    """Excluded by a .gitignore or .git/info/exclude line (the rules written for git, not for offload)."""
    return isinstance(decision, Rule) and not decision.source.endswith(".offloadignore")


class Collector:
    """Hears each scanned directory's excluded children (scan._scan_dir's on_dir) and sorts them."""

    def __init__(self, includes: Includes, report_limit: int, seen=None):
        self.includes, self.report_limit, self.seen_by = includes, report_limit, seen
        self.candidates, self.included, self.left_out = [], [], []
        self.ignored_dirs: list[tuple[str, bool]] = []  # (relpath, whether to report what is inside)
        self.seen, self.capped = 0, False
        self._offload_levels: dict[int, object] = {}

    def on_dir(self, rel_dir: str, levels: list, excluded: list, kept_files: int) -> None:
        for child, relpath, is_dir, decision in excluded:
            if child.name in NEVER_SENT_DIRS:
                continue
            if is_dir:
                self.saw(relpath, child.path)  # what is_junk finds inside it (a pyvenv.cfg) changes it
                junk = is_junk(child.name, True, child.path)
                reach = self.includes.dir_included(relpath) or self.includes.may_reach(relpath, named_only=junk)
                report = from_git(decision) and not junk
                if reach or report:
                    self.ignored_dirs.append((relpath, report))
                continue
            if not child.is_file(follow_symlinks=False):
                if child.is_symlink() and self.includes.file_included(relpath):
                    self.included.append(self.entry_of(child, relpath))
                continue
            if self.includes.file_included(relpath):
                self.included.append(self.entry_of(child, relpath))
            elif from_git(decision) and not never_by_rule(child.name):
                entry = self.entry_of(child, relpath)
                if kept_files and not self.excluded_by_offloadignore(levels, relpath):
                    self.candidates.append(entry)
                elif not self.excluded_by_offloadignore(levels, relpath):
                    self.left_out.append(LeftOut(relpath, entry.size, rel_dir, False))

    def excluded_by_offloadignore(self, levels: list, relpath: str) -> bool:
        """Whether the .offloadignore lines alone exclude relpath: those always win over the beside-rule."""
        own = []
        for level in levels:
            if id(level) not in self._offload_levels:
                rules = tuple(rule for rule in level.rules if rule.source.endswith(".offloadignore"))
                self._offload_levels[id(level)] = (level, rule_level(level.base, rules) if rules else None)
            if self._offload_levels[id(level)][1] is not None:
                own.append(self._offload_levels[id(level)][1])
        return bool(own) and isinstance(deciding_rule(own, relpath, False), Rule)

    def walk_ignored(self, abs_top: str, top: str, report: bool) -> None:
        """Inside an ignored directory: what includes reach (every entry), and for the report (bounded)."""
        stack = [(abs_top, top, report)]
        while stack:
            abs_dir, rel_dir, report = stack.pop()
            reach = self.includes and (self.includes.dir_included(rel_dir) or self.includes.may_reach(rel_dir))
            if not reach and (not report or self.capped):
                continue
            self.saw(rel_dir, abs_dir)
            try:
                with os.scandir(abs_dir) as listing:
                    children = sorted(listing, key=lambda child: child.name)
            except OSError:  # gone, or not ours to read: nothing to send from it
                continue
            for child in children:
                relpath = f"{rel_dir}/{child.name}"
                if report and not self.capped:
                    self.seen += 1
                    self.capped = self.seen > self.report_limit
                try:
                    if child.is_dir(follow_symlinks=False):
                        if child.name not in NEVER_SENT_DIRS:
                            self.saw(relpath, child.path)  # a pyvenv.cfg made or removed inside changes it
                            junk = is_junk(child.name, True, child.path)
                            if self.includes.dir_included(relpath) or self.includes.may_reach(relpath, junk):
                                stack.append((child.path, relpath, report and not junk))
                            elif report and not junk and not self.capped:
                                stack.append((child.path, relpath, True))
                    elif self.includes.file_included(relpath) and (child.is_file(follow_symlinks=False)
                                                                   or child.is_symlink()):
                        self.included.append(self.entry_of(child, relpath))
                    elif (report and not self.capped and child.is_file(follow_symlinks=False)
                          and not never_by_rule(child.name)):
                        size = self.entry_of(child, relpath).size
                        self.left_out.append(LeftOut(relpath, size, top, True))
                except FileNotFoundError:  # deleted while we looked
                    continue


    def saw(self, relpath: str, abs_path: str) -> None:
        if self.seen_by is not None:
            self.seen_by(relpath, lstat_or_none(abs_path))

    def entry_of(self, child: os.DirEntry, relpath: str) -> LocalEntry:
        entry = entry_of(child, relpath)
        if self.seen_by is not None:
            self.seen_by(relpath, child.stat(follow_symlinks=False))  # cached by the DirEntry: no second lstat
        return entry


def entry_of(child: os.DirEntry, relpath: str) -> LocalEntry:
    info = child.stat(follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        return LocalEntry(relpath, "link", 0, info.st_mtime_ns, stat.S_IMODE(info.st_mode), os.readlink(child.path))
    return LocalEntry(relpath, "file", info.st_size, info.st_mtime_ns, stat.S_IMODE(info.st_mode))


def selection_lines(selection: Selection) -> list[str]:
    """What a sync says besides its summary: what the beside-rule added, what the data budget and the ignore
    rules left out (with the flag that sends it), what includes added. Empty parts say nothing."""
    lines = []
    if selection.added:
        lines.append(f"sync: sending git-ignored files that sit beside synced ones: {count(selection.added)} "
                     f"({human_size(sum(e.size for e in selection.added))}): {largest(selection.added)}")
    if selection.over_budget:
        first = max(selection.over_budget, key=lambda e: (e.size, e.path))
        lines.append(f"sync: over the {budget_text(selection.data_budget)} data budget, left out "
                     f"{count(selection.over_budget)} ({human_size(sum(e.size for e in selection.over_budget))}): "
                     f"{largest(selection.over_budget)}; send with --include {shlex.quote(first.path)}, "
                     "or raise data_budget in offload.yaml")
    if selection.left_out or selection.left_out_capped:
        lines.append(left_out_line(selection.left_out, selection.left_out_capped))
    if selection.included:
        lines.append(f"sync: --include sends {count(selection.included)} that ignore rules leave out "
                     f"({human_size(sum(e.size for e in selection.included))})")
    return lines


def left_out_line(left_out: list, capped: bool) -> str:
    groups: dict[str, list] = {}
    for item in left_out:
        groups.setdefault(item.group, []).append(item)
    ordered = sorted(groups.items(), key=lambda group: (-sum(i.size for i in group[1]), group[0]))
    parts = [f"{name + '/' if name else './'} {human_size(sum(i.size for i in items))} ({count(items)}) "
             f"--include {shlex.quote(include_flag(name, items))}" for name, items in ordered[:SHOWN]]
    line = "sync: left out by ignore rules: " + "; ".join(parts)
    rest = [item for _, items in ordered[SHOWN:] for item in items]
    if rest:
        line += (f"; and {len(ordered) - SHOWN} more director{'y' if len(ordered) - SHOWN == 1 else 'ies'} "
                 f"({human_size(sum(item.size for item in rest))})")
    if capped:
        line += f"; and more (stopped looking after {REPORT_ENTRY_LIMIT:,} entries in ignored directories)"
    return line


def include_flag(group: str, items: list) -> str:
    """The --include pattern that sends a group: the file itself, the whole ignored directory, or its files
    of one extension."""
    if len(items) == 1:
        return items[0].path
    if items[0].whole_dir:
        return f"{group}/**"
    suffixes = {os.path.splitext(item.path)[1] for item in items}
    suffix = suffixes.pop() if len(suffixes) == 1 else ""
    return f"{group}/*{suffix}" if group else f"/*{suffix}"


def count(entries: list) -> str:
    return f"{len(entries)} file{'' if len(entries) == 1 else 's'}"


def largest(entries: list) -> str:
    shown = sorted(entries, key=lambda entry: (-entry.size, entry.path))[:SHOWN]
    text = ", ".join(f"{entry.path} ({human_size(entry.size)})" for entry in shown)
    return text + (f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else "")


def budget_text(num_bytes: int) -> str:
    """2 GiB as "2 GiB", as it is usually written in offload.yaml; anything else in decimal units."""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if num_bytes and num_bytes % size == 0:
            return f"{num_bytes // size} {unit}"
    return human_size(num_bytes)
