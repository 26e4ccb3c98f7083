"""`offload fetch RUN [PATTERN...]`: a run's files, from its host, verified by SHA-256, resumable."""
from __future__ import annotations

from pathlib import Path

from offload.runs.fetched import fetch_run
from offload.runs.reach import agent_for
from offload.runs.record import find_run, node_meta
from offload.runs.record import project_root_of
from offload.sync.fetch import checked_patterns

WITHHELD_EXIT = 3  # `offload fetch` when some files were not the run's own versions any more, and not fetched


def fetch_command(project, run: str, patterns: list, to, node: int = 0, current: bool = False) -> int:
    root = project_root_of(project)
    meta = node_meta(find_run(root, run), node)
    patterns = checked_patterns(patterns)  # a bad pattern needs no connection to be refused
    with agent_for(meta) as agent:
        summary = fetch_run(agent, root, meta, patterns, Path(to).expanduser().resolve() if to else None, current)
    return WITHHELD_EXIT if summary["withheld"] else 0
