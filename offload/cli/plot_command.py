"""`offload plot [RUN...] [--vs RUN] [--png FILE]`: one run's curves (the last by default), or several on one
chart, from what this laptop has of each (its output.log and metrics.jsonl; `offload logs RUN` brings a run
that is still going up to date)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from offload.cli.plot_render import render_terminal, write_png
from offload.console import say
from offload.errors import OffloadError
from offload.runs.curves import run_curve
from offload.runs.record import LAST, find_run, project_root_of, record_of

SMALLEST = (60, 24)  # below this, six panels have no room for their axes
PIPE_SIZE = (120, 42)  # off a terminal: a size that reads well in a log or a file


def plot_runs(project: Path | None, references: list, png: str | None, size: tuple | None = None) -> int:
    root = project_root_of(project)
    metas = []
    for reference in references or [LAST]:
        meta = find_run(root, reference)
        if meta["run_id"] not in [known["run_id"] for known in metas]:
            metas.append(meta)
    curves = []
    for meta in metas:
        curve = run_curve(record_of(root, meta).dir, meta)
        if len(curve):
            curves.append(curve)
        else:
            say(f"run {meta['run_id']} has nothing to plot: it printed no iteration lines and wrote no metrics "
                "(here; `offload logs` brings a run up to date)")
    if not curves:
        raise OffloadError("nothing to plot", hint="plot a run that printed `iter N: loss X, time Yms` lines or "
                                                   "wrote metrics (offload_metrics)")
    if png:
        write_png(curves, png)
        say(f"wrote {png}: {', '.join(curve.label for curve in curves)}")
        return 0
    width, height = size or terminal_size()
    sys.stdout.write(render_terminal(curves, width, height, colorless=not sys.stdout.isatty()) + "\n")
    return 0


def terminal_size() -> tuple:
    if not sys.stdout.isatty():
        return PIPE_SIZE
    columns, lines = shutil.get_terminal_size()
    return max(columns, SMALLEST[0]), max(lines - 1, SMALLEST[1])
