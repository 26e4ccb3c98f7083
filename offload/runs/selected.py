"""What a run on hosts sends: the project's selection (sync/selection.py), which must hold the script itself."""
from __future__ import annotations

from pathlib import Path

from offload.errors import OffloadError
from offload.sync.ignore import explain
from offload.sync.selection import select_project


def selection_for(root: Path, script: str | None, options, registry):
    """The selection to sync, when the run may go to a host (one is named or registered); else None. Checked
    before connecting: a script that would not be synced is refused at once (a module, script None, may be
    installed on the host rather than in the project)."""
    if not (options.host or options.hosts or registry.default_name):
        return None
    selection = select_project(root, options.include)
    if script is not None and script not in {entry.path for entry in selection.entries}:
        rule = explain(root, script) or "an ignore rule"
        raise OffloadError(f"{script} would not be synced: excluded by {rule}",
                           hint=f"re-include it with `!{script}` (and `!DIR/` for an excluded directory) in .offloadignore")
    return selection
