"""The typer commands that work on a host beside its runs: `offload exec` and `offload shell` (exec_command.py
does the work), `offload forward` (forward_command.py) and `offload queue` (queue_command.py). Registered by
app.py, which stays a table of contents."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

FORWARD_HELP = ("Forward this laptop's 127.0.0.1:PORT to the host's 127.0.0.1:PORT while the run is followed "
                "(LOCAL:REMOTE for another local port; repeatable), as ssh -L does.")
BIND_HELP = "The laptop address forwarded ports listen on (default 127.0.0.1; 0.0.0.0 opens them to the network)."


def register(app: typer.Typer, project_help: str, connect_timeout_help: str, run_help: str,
             reconnect_for_help: str) -> None:
    register_in_project(app, project_help, connect_timeout_help, run_help)
    register_beside_runs(app, project_help, connect_timeout_help, run_help, reconnect_for_help)


def register_in_project(app: typer.Typer, project_help: str, connect_timeout_help: str, run_help: str) -> None:
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


def register_beside_runs(app: typer.Typer, project_help: str, connect_timeout_help: str, run_help: str,
                         reconnect_for_help: str) -> None:
    @app.command("forward")
    def forward_(
        where: str = typer.Argument(..., metavar="RUN|HOST", help=f"A registered host, or a run: {run_help}"),
        ports: List[str] = typer.Argument(..., metavar="[LOCAL:]PORT...", help="Host ports to forward."),
        project: Optional[Path] = typer.Option(None, "--project", help=project_help),
        bind: Optional[str] = typer.Option(None, "--bind", metavar="ADDRESS", help=BIND_HELP),
        connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=connect_timeout_help),
        reconnect_for: float = typer.Option(600.0, "--reconnect-for", min=0, help=reconnect_for_help),
    ):
        """Forward laptop ports to the host's (a run's host, or a registered one) until Ctrl-C, as ssh -L -N
        does: `offload forward last 6006`, then open http://127.0.0.1:6006."""
        from offload.cli.forward_command import forward_ports  # lazy: keeps `offload --help` fast

        raise typer.Exit(forward_ports(where, list(ports), project, bind, connect_timeout, reconnect_for))

    @app.command("queue")
    def queue_(
        host: Optional[str] = typer.Argument(None, metavar="[HOST]", help="A registered host (default: the first)."),
        clear: bool = typer.Option(False, "--clear", help="Take this laptop's waiting runs out of the line."),
        connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=connect_timeout_help),
    ):
        """The host's line: the run that holds its GPU, then the waiting runs in the order they will start
        (from every laptop). `offload run --queue` joins it; `offload stop RUN` leaves it."""
        from offload.cli.queue_command import show_queue  # lazy: keeps `offload --help` fast

        raise typer.Exit(show_queue(host, clear, connect_timeout))
