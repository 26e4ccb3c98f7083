"""Files a fetch withheld (not the run's own versions any more: remote_agent/outputs.py), in words."""
from __future__ import annotations

from remote_agent.protocol import DELETED, NEWER

NAMED_WITHHELD = 10  # up to this many withheld files are named one per line
CURRENT_HINT = "--current fetches the version there now"


def describe_withheld(withheld: list, run_id: str) -> list:
    """One line per withheld file (NAMED_WITHHELD of them, then a count)."""
    lines = []
    for item in withheld[:NAMED_WITHHELD]:
        by = f"by run {item.by_run}" if item.by_run else "on the host"
        if item.reason == DELETED:
            lines.append(f"{item.path} was deleted {by} after run {run_id} wrote it; not fetched (it is gone)")
        elif item.reason == NEWER:
            lines.append(f"{item.path} was changed {by} after run {run_id} ended; not fetched ({CURRENT_HINT})")
        else:
            lines.append(f"{item.path} was changed {by} after run {run_id} wrote it; not fetched ({CURRENT_HINT})")
    if len(withheld) > NAMED_WITHHELD:
        lines.append(f"and {len(withheld) - NAMED_WITHHELD} more files changed since run {run_id}; not fetched "
                     "(--current fetches the versions there now)")
    return lines
