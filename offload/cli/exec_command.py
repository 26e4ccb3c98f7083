"""`offload exec` and `offload shell`: one command, or a login shell, in the project's directory on the host,
as `ssh host CMD` and `ssh -t host` run them.

The project is synced first (quietly, unless something was sent), so the command sees the code as it is
here; no GPU lock is taken, so it runs beside a training job (nvidia-smi, a data prep script). A shell in a
run's directory (`offload shell RUN`) syncs nothing: it is that run's tree. With no host reachable both say
so: never a fallback to this machine.
"""
from __future__ import annotations

import io
import os
import shlex
import sys
from pathlib import Path

from offload.config.resolve import registered_target
from offload.console import say
from offload.errors import OffloadError
from offload.runs.reach import run_or_host
from offload.runs.record import project_root_of
from offload.sync.push import sync_project
from offload.transport.links import open_link
from offload.transport.remote_exec import in_project, login_shell, run_in_terminal, run_on_host, sh_line


def exec_on_host(host_name: str | None, project: Path | None, connect_timeout: float, argv: list,
                 shell: bool) -> int:
    """argv run verbatim (shell: its words joined as one line of sh); the command's exit status."""
    if not argv:
        raise OffloadError("no command to run", hint="offload exec -- CMD ARGS... (e.g. offload exec -- nvidia-smi)")
    root, target = project_root_of(project), registered_target(host_name, "run on")
    with open_link(target, connect_timeout) as link:
        project_dir = synced(link, root, target)
        command = " ".join(argv) if shell else "exec " + shlex.join(argv)
        sys.stdout.flush()  # what offload printed goes before the command's own output
        return run_on_host(link.client, sh_line(in_project(project_dir, target.python, command)),
                           stdin_fd(), sys.stdout.fileno(), sys.stderr.fileno())


def shell_on_host(where: str | None, project: Path | None, connect_timeout: float) -> int:
    """A login shell on WHERE (a host, or the host of a run); its exit status."""
    tty_fd = stdin_fd()
    if tty_fd is None or not os.isatty(tty_fd) or not os.isatty(sys.stdout.fileno()):
        raise OffloadError("offload shell needs a terminal", hint="run one command with: offload exec -- CMD ARGS...")
    root = project_root_of(project)
    run, target = run_or_host(root, where, "run on")
    if getattr(target, "local", False):
        raise OffloadError(f"run {run['run_id']} ran on this machine (the CPU fallback): there is no host to open a "
                           "shell on", hint=f"its directory is {run.get('project_dir')}")
    with open_link(target, connect_timeout) as link:
        project_dir = run["project_dir"] if run is not None else synced(link, root, target)
        named = f"export OFFLOAD_RUN_ID={shlex.quote(run['run_id'])}; " if run is not None else ""
        line = sh_line(login_shell(project_dir, target.python, named))
        sys.stdout.flush()
        return run_in_terminal(link.client, line, tty_fd, sys.stdout.fileno(), os.environ.get("TERM") or "xterm")


def synced(link, root: Path, target) -> str:
    """Sync the project (saying so only when something went); its directory on the host."""
    result = sync_project(link.agent, root, target.workdir, out=io.StringIO())
    if result.sent_files or result.deleted:
        say(f"synced {result.sent_files} changed file{'' if result.sent_files == 1 else 's'} -> "
            f"{target.name}:{result.project_dir}")
    return result.project_dir


def stdin_fd() -> int | None:
    """0, where there is a stdin to read (the keeper puts the client's there); else None."""
    try:
        return sys.stdin.fileno() if sys.stdin is not None else None
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
