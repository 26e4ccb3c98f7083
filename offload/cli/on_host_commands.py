"""The typer commands that work in the project's directory on a host: `offload exec` and `offload shell`
(exec_command.py does the work). Registered by app.py, which stays a table of contents."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer, project_help: str, connect_timeout_help: str, run_help: str) -> None:
    @app.command("exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
    def exec_(
        argv: List[str] = typer.Argument(..., metavar="-- CMD [ARGS]...", help="The command, passed verbatim."),
        host: Optional[str] = typer.Option(None, "--host", "-H", help="Registered host (default: the first)."),
        project: Optional[Path] = typer.Option(None, "--project", help=project_help),
        shell: bool = typer.Option(False, "--shell", help="Run CMD ARGS as one line of sh (pipes, $VARS, globs)."),
        connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=connect_timeout_help),
    ):
        """Sync, then run one command in the project's directory on the host: stdin, stdout, stderr and exit
        code pass through, and no GPU lock is taken (`offload exec -- nvidia-smi`)."""
        from offload.cli.exec_command import exec_on_host  # lazy: keeps `offload --help` fast

        raise typer.Exit(exec_on_host(host, project, connect_timeout, list(argv), shell))

    @app.command("shell")
    def shell_(
        where: Optional[str] = typer.Argument(None, metavar="[RUN|HOST]",
                                              help=f"A registered host (default: the first), or a run: {run_help}"),
        project: Optional[Path] = typer.Option(None, "--project", help=project_help),
        connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=connect_timeout_help),
    ):
        """A login shell on the host in the project's directory (synced first), or in a run's, with
        OFFLOAD_RUN_ID set; the host's python first on PATH. Its exit status is offload's."""
        from offload.cli.exec_command import shell_on_host  # lazy: keeps `offload --help` fast

        raise typer.Exit(shell_on_host(where, project, connect_timeout))
