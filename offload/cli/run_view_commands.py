"""The typer commands that look at this project's runs as a whole: `offload runs` (runs_list.py) and `offload plot`
(plot_command.py). Registered by app.py, which stays a table of contents."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer, project_help: str, run_help: str) -> None:
    @app.command("runs")
    def runs_list(
        project: Optional[Path] = typer.Option(None, "--project", help=project_help),
        all_runs: bool = typer.Option(False, "--all", help="Every run, not only the newest 20."),
        host: Optional[str] = typer.Option(None, "--host", "-H", help="Only the runs on this host."),
        count: int = typer.Option(20, "-n", min=1, help="How many of the newest runs to list."),
    ):
        """List this project's runs, newest last: host, device, duration, exit, final loss and its curve, MFU and
        command."""
        from offload.runs.record import project_root_of  # lazy: keeps `offload --help` fast
        from offload.cli.runs_list import print_runs  # lazy: keeps `offload --help` fast

        raise typer.Exit(print_runs(project_root_of(project), host, None if all_runs else count))

    @app.command("plot")
    def plot(
        runs: Optional[List[str]] = typer.Argument(None, metavar="[RUN]...", help=f"Runs to draw (default: the last): {run_help}"),
        vs: Optional[List[str]] = typer.Option(None, "--vs", metavar="RUN", help="Another run on the same chart (repeatable)."),
        png: Optional[str] = typer.Option(None, "--png", metavar="FILE", help="Write an image instead (needs matplotlib: pip install 'offload[plot]')."),
        project: Optional[Path] = typer.Option(None, "--project", help=project_help),
    ):
        """Loss, tokens/s and MFU against iteration and training time, in the terminal: a laptop run and a GPU
        run on one chart show the speed-up (`offload plot last --vs RUN`)."""
        from offload.cli.plot_command import plot_runs  # lazy: keeps `offload --help` fast

        raise typer.Exit(plot_runs(project, [*(runs or []), *(vs or [])], png))
