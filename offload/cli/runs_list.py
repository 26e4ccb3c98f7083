"""`offload runs`: the project's runs, one row each."""
from __future__ import annotations

import sys

from offload.console import add_plain_row, table_console
from offload.mfu.report import duration_text, percent
from offload.runs.record import duration_s, load_runs
from offload.runs.run_state import exit_text


def print_runs(project_root) -> int:
    found = load_runs(project_root)
    if not found:
        print(f"offload: no runs recorded in {project_root}/.offload/runs", file=sys.stderr)
        return 0
    from rich.table import Table  # lazy: rich costs start-up time; only a listing pays it

    table = Table("run", "host", "device", "duration", "exit", "final loss", "MFU", box=None)
    for meta in found:
        loss = meta.get("final_loss")
        add_plain_row(table, meta["run_id"], meta.get("host", "?"), meta.get("device") or "?", duration_text(duration_s(meta)), exit_text(meta),
                      "?" if loss is None else f"{loss:.4f}", percent(meta.get("mfu")))
    table_console().print(table)
    return 0
