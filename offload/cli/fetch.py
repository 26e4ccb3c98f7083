"""`offload fetch RUN [PATTERN...]`: a run's files, from its host, verified by SHA-256, resumable."""
from __future__ import annotations

import re
from pathlib import Path

from offload.runs.fetched import fetch_run
from offload.runs.reach import agent_for, find_run_now
from offload.runs.record import node_meta, project_root_of
from offload.sync.fetch import checked_patterns

WITHHELD_EXIT = 3  # `offload fetch` when some files were not the run's own versions any more, and not fetched
RUN_REFERENCE = re.compile(r"[A-Za-z0-9-]+")  # run ids, their prefixes and suffixes, `last`, `running`


def run_and_patterns(run: str, patterns: list) -> tuple:
    """RUN is optional: a first argument that no run reference can be (a path or a glob: `out/ckpt.pt`,
    `*.pt`) is the first pattern, of the last run."""
    if RUN_REFERENCE.fullmatch(run):
        return run, patterns
    return "last", [run, *patterns]


def fetch_command(project, run: str, patterns: list, to, node: int = 0, current: bool = False) -> int:
    root = project_root_of(project)
    run, patterns = run_and_patterns(run, patterns)
    meta = node_meta(find_run_now(root, run), node)
    patterns = checked_patterns(patterns)  # a bad pattern needs no connection to be refused
    with agent_for(meta) as agent:
        summary = fetch_run(agent, root, meta, patterns, Path(to).expanduser().resolve() if to else None, current)
    return WITHHELD_EXIT if summary["withheld"] else 0
