"""`offload runs`: the project's runs, one row each, newest last (next to the prompt), readable at 80 columns."""
from __future__ import annotations

import shlex
import sys

from offload.console import add_plain_row, say, table_console
from offload.mfu.report import duration_text, percent, sparkline
from offload.runs.record import duration_s, load_runs
from offload.runs.run_state import exit_text

SHOWN_BY_DEFAULT = 20  # the newest runs; --all or -n N for more


def command_text(meta: dict) -> str:
    """The script and its arguments as a shell would need them typed."""
    return " ".join(shlex.quote(word) for word in [meta.get("script") or "?", *(meta.get("args") or [])])


def ran_on(meta: dict, host: str) -> bool:
    return meta.get("host") == host or any(node.get("host") == host for node in meta.get("nodes") or [])


def runs_table(found: list, width: int):
    """One line a run when that fits `width`. Otherwise the id still never wraps (it is what people copy), the
    command wraps, at spaces where it can, and cells stack two facts (host over device, exit over duration,
    loss over MFU over its curve), so that a row fits 80 columns."""
    from rich.console import Console  # lazy: rich costs start-up time; only a listing pays it
    from rich.measure import Measurement  # lazy: as above
    from rich.table import Table  # lazy: as above

    wide = Table("run", "host", "device", "duration", "exit", "final loss", "loss curve", "MFU", "command", box=None)
    for meta in found:
        add_plain_row(wide, meta["run_id"], meta.get("host", "?"), meta.get("device") or "?",
                      duration_text(duration_s(meta)), exit_text(meta), loss_text(meta),
                      sparkline(meta.get("loss_curve")), percent(meta.get("mfu")), command_text(meta))
    measuring = Console(width=1 << 20)
    if Measurement.get(measuring, measuring.options, wide).maximum <= width:
        return wide
    table = Table(box=None, padding=(0, 1), pad_edge=False)
    table.add_column("run", no_wrap=True, min_width=max(len(meta["run_id"]) for meta in found))
    table.add_column("host\ndevice", max_width=14)
    table.add_column("exit\ntook", max_width=9)
    table.add_column("loss\nMFU", no_wrap=True, max_width=12)
    table.add_column("command", overflow="fold", ratio=1)  # a word longer than the column folds, never lost
    for meta in found:
        add_plain_row(table, meta["run_id"], f"{meta.get('host', '?')}\n{meta.get('device') or '?'}",
                      f"{exit_text(meta)}\n{duration_text(duration_s(meta))}",
                      f"{loss_text(meta)}\n{percent(meta.get('mfu'))}\n{sparkline(meta.get('loss_curve'))}",
                      command_text(meta))
    return table


def loss_text(meta: dict) -> str:
    return "?" if meta.get("final_loss") is None else f"{meta['final_loss']:.4f}"


def print_runs(project_root, host: str | None = None, count: int | None = SHOWN_BY_DEFAULT) -> int:
    """The newest `count` runs (all with None), only those on `host` when given."""
    found = [meta for meta in load_runs(project_root) if host is None or ran_on(meta, host)]
    if not found:
        on_host = f" on {host}" if host else ""
        print(f"offload: no runs{on_host} recorded in {project_root}/.offload/runs", file=sys.stderr)
        return 0
    shown = found if count is None else found[-count:]
    console = table_console()
    console.print(runs_table(shown, console.width))
    if len(shown) < len(found):
        say(f"the newest {len(shown)} of {len(found)} runs; `offload runs --all` lists every one")
    return 0
