"""The `offload` command. Thin: parse, call the module that owns the concern, print errors in one line.

Nothing heavy is imported at start-up (paramiko, torch, rich tables): `offload --help` stays fast.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from offload.cli import on_host_commands, run_view_commands
from offload.cli.help_layout import plain_command
from offload.cli.options_after_script import warn_options_after_script
from offload.errors import OffloadError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Run PyTorch training on your own GPU box over SSH; locally on the CPU when it is off.")
hosts_app = typer.Typer(no_args_is_help=True, help="Register and check GPU hosts.")
app.add_typer(hosts_app, name="hosts")
DEBUG = {"on": False}
INVOCATION = {"argv": []}  # the arguments run_cli was given: a failed run's diagnosis repeats them (diagnose.py)
RUN_HELP = "The run: its id, a unique prefix or a unique last 4+ characters of one, `last` or `running`."
PROJECT_HELP = "Project directory (default: the nearest one up from here with offload.yaml, .offload/runs/ or .git)."
CONNECT_TIMEOUT_HELP = "Seconds to wait for the host's SSH banner."
RECONNECT_FOR_HELP = "Seconds to keep reconnecting after the link drops."


def print_version(asked: bool) -> None:
    if asked:
        from offload import __version__  # lazy: only for --version

        print(f"offload {__version__}")
        raise typer.Exit()


@app.callback()
def root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of internal errors."),
         version: bool = typer.Option(False, "--version", is_eager=True, callback=print_version,
                                      help="Show offload's version and exit.")):
    DEBUG["on"] = debug


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def run(
    context: typer.Context,
    script: Optional[str] = typer.Argument(None, help="The training script, relative to the current directory."),
    args: Optional[List[str]] = typer.Argument(None, help="Passed to the script exactly as given."),
    host: Optional[List[str]] = typer.Option(None, "--host", "-H", help="Registered host (default: the first in hosts.yaml); repeat it for one job across several hosts."),
    nproc_per_node: Optional[int] = typer.Option(None, "--nproc-per-node", min=1, help="Processes (GPUs) per node; >1 uses torchrun."),
    no_fallback: bool = typer.Option(False, "--no-fallback", help="Fail instead of running locally when the host is unreachable."),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=CONNECT_TIMEOUT_HELP),
    project: Optional[Path] = typer.Option(None, "--project", help=PROJECT_HELP),
    detach: bool = typer.Option(False, "--detach", "-d", help="Return as soon as the job has started."),
    reconnect_for: float = typer.Option(600.0, "--reconnect-for", min=0, help=RECONNECT_FOR_HELP),
    fetch: Optional[List[str]] = typer.Option(None, "--fetch", help="Fetch files matching PATTERN when the run ends (repeatable)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Exit with code 75 instead of waiting when the host is busy."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Run RUN's command again, with its fetched files put back."),
    force: bool = typer.Option(False, "--force", help="Replace files changed on the host since they were synced (says which)."),
    include: Optional[List[str]] = typer.Option(None, "--include", help="Send files matching PATTERN (gitignore-style, from the project root) whatever the ignore rules say (repeatable)."),
    env: Optional[List[str]] = typer.Option(None, "--env", "-e", metavar="KEY=VALUE", help="Set an environment variable for the job, over the host's env (repeatable)."),
    module: bool = typer.Option(False, "-m", "--module", help="SCRIPT is a module name, run as `python -m SCRIPT ARGS`."),
    forward: Optional[List[str]] = typer.Option(None, "--forward", "-L", metavar="[LOCAL:]PORT", help=on_host_commands.FORWARD_HELP),
    bind: Optional[str] = typer.Option(None, "--bind", metavar="ADDRESS", help=on_host_commands.BIND_HELP),
    queue: bool = typer.Option(False, "--queue", help="Return at once, the run in the host's line: runs start in the order they came."),
):
    """Sync the project to the host and run SCRIPT there, streaming its output back."""
    if script is None and resume is None:
        raise typer.BadParameter("missing SCRIPT (or --resume RUN)", param_hint="SCRIPT")
    warn_options_after_script(context.command, list(INVOCATION["argv"]), script, list(args or []))
    from offload.runs.job import RunOptions, run as run_job  # lazy: keeps `offload --help` fast (paramiko, torch facts)
    from offload.runs.launch import env_assignments  # lazy: as above
    from offload.config.ports import parse_forward  # lazy: as above

    hosts = list(host or [])
    raise typer.Exit(run_job(RunOptions(script=script, args=list(args or []), host=hosts[0] if len(hosts) == 1 else None,
                                        hosts=hosts, nproc_per_node=nproc_per_node,
                                        no_fallback=no_fallback, connect_timeout=connect_timeout, project=project,
                                        detach=detach, reconnect_for=reconnect_for, fetch=list(fetch or []),
                                        no_wait=no_wait, resume=resume, include=list(include or []),
                                        command_line=list(INVOCATION["argv"]), force=force,
                                        env=env_assignments(env or []), module=module,
                                        forward=[parse_forward(spec) for spec in forward or []], bind=bind,
                                        queue=queue)))


@app.command()
def sync(
    host: Optional[str] = typer.Option(None, "--host", "-H", help="Registered host (default: the first)."),
    project: Optional[Path] = typer.Option(None, "--project", help=PROJECT_HELP),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=CONNECT_TIMEOUT_HELP),
    force: bool = typer.Option(False, "--force", help="Replace files changed on the host since they were synced (says which)."),
    include: Optional[List[str]] = typer.Option(None, "--include", help="Send files matching PATTERN whatever the ignore rules say (repeatable)."),
):
    """Sync the project to the host, without running anything."""
    from offload.cli.sync_command import sync_only  # lazy: keeps `offload --help` fast

    raise typer.Exit(sync_only(host, project, connect_timeout, list(include or []), force))


on_host_commands.register(app, PROJECT_HELP, CONNECT_TIMEOUT_HELP, RUN_HELP, RECONNECT_FOR_HELP)


@app.command()
def logs(
    run: str = typer.Argument("last", help=RUN_HELP),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep following until the run ends."),
    project: Optional[Path] = typer.Option(None, "--project", help=PROJECT_HELP),
    reconnect_for: float = typer.Option(600.0, "--reconnect-for", min=0, help=RECONNECT_FOR_HELP),
):
    """Bring the run's output up to date locally (from the last byte the laptop has) and show it."""
    from offload.cli.follow_up import logs_command  # lazy: keeps `offload --help` fast

    raise typer.Exit(logs_command(project, run, follow, reconnect_for))


@app.command()
def status(
    run: str = typer.Argument("last", help=RUN_HELP),
    project: Optional[Path] = typer.Option(None, "--project", help=PROJECT_HELP),
):
    """Say whether the run is running, waiting, exited (with its code), killed by a signal, or lost."""
    from offload.cli.follow_up import status_command  # lazy: keeps `offload --help` fast

    raise typer.Exit(status_command(project, run))


@app.command()
def stop(
    run: str = typer.Argument("last", help=RUN_HELP),
    grace: float = typer.Option(10.0, "--grace", min=0, help="Seconds between SIGTERM and SIGKILL."),
    project: Optional[Path] = typer.Option(None, "--project", help=PROJECT_HELP),
):
    """Stop a run: SIGTERM to its whole process group, SIGKILL after the grace period."""
    from offload.cli.follow_up import stop_command  # lazy: keeps `offload --help` fast

    raise typer.Exit(stop_command(project, run, grace))


@app.command("fetch")
def fetch_files(
    run: str = typer.Argument("last", help=RUN_HELP),
    patterns: Optional[List[str]] = typer.Argument(None, help="Globs relative to the run's project dir (default: out/**)."),
    to: Optional[Path] = typer.Option(None, "--to", help="Destination (default: .offload/runs/<id>/files/)."),
    project: Optional[Path] = typer.Option(None, "--project", help=PROJECT_HELP),
    node: int = typer.Option(0, "--node", min=0, help="Of a multi-node run: which node's files."),
    current: bool = typer.Option(False, "--current", help="The versions on the host now, even those a later run changed."),
):
    """Copy files from the run's project directory on its host, verified by SHA-256, resumable.

    RUN may be left out: `offload fetch out/ckpt.pt` fetches from the last run (a path or a glob is never a RUN).

    Only the versions the run itself left: a file a later run changed is named and not fetched (--current
    fetches it). Exit 0 when every listed file is here, 3 when some were withheld so.
    """
    from offload.cli.fetch import fetch_command  # lazy: keeps `offload --help` fast

    raise typer.Exit(fetch_command(project, run, list(patterns or []), to, node, current))


run_view_commands.register(app, PROJECT_HELP, RUN_HELP)  # `offload runs` and `offload plot`, here in --help


@hosts_app.command("add")
def hosts_add(
    name: str = typer.Argument(..., help="A short name for the host, e.g. 4070ti."),
    destination: str = typer.Argument(..., help="[user@]hostname[:port], or an alias from ~/.ssh/config."),
    port: Optional[int] = typer.Option(None, "--port", "-p", help="SSH port (default: 22, or ~/.ssh/config's)."),
    identity: Optional[str] = typer.Option(None, "--identity", "-i", help="Private key file."),
    proxy_jump: Optional[str] = typer.Option(None, "--proxy-jump", "-J", help="Jump host, [user@]host[:port], as ssh -J."),
    python: Optional[str] = typer.Option(None, "--python", help="The host's Python that has torch."),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="Where projects go on the host (default ~/offload)."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="Processes per node by default."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Accept the host's key without asking."),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=CONNECT_TIMEOUT_HELP),
    force: bool = typer.Option(False, "--force", help="Save the host even when its python cannot start offload's agent."),
    wake_mac: Optional[str] = typer.Option(None, "--wake-mac", metavar="MAC", help="Wake it with Wake-on-LAN when it does not answer."),
    wake_broadcast: Optional[str] = typer.Option(None, "--wake-broadcast", metavar="ADDRESS", help="Where the wake packet goes (default 255.255.255.255)."),
):
    """Register a host, connecting once to confirm its key and check its python and torch."""
    from offload.cli.hosts import add_host, wake_entry  # lazy: keeps `offload --help` fast

    raise typer.Exit(add_host(name, destination, dict(port=port, identity_file=identity, proxy_jump=proxy_jump, python=python,
                                                      workdir=workdir, gpus=gpus, wake=wake_entry(wake_mac, wake_broadcast)),
                              yes, connect_timeout, force))


@hosts_app.command("wake")
def hosts_wake(name: str = typer.Argument(..., help="The registered host to wake (its `wake:` in hosts.yaml)."),
               connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=CONNECT_TIMEOUT_HELP)):
    """Send the host a Wake-on-LAN packet and wait for its SSH server (a run does this by itself)."""
    from offload.cli.hosts import wake_registered  # lazy: keeps `offload --help` fast

    raise typer.Exit(wake_registered(name, connect_timeout))


@hosts_app.command("list")
def hosts_list():
    """Show registered hosts."""
    from offload.cli.hosts import list_hosts  # lazy: keeps `offload --help` fast

    raise typer.Exit(list_hosts())


@hosts_app.command("remove")
def hosts_remove(name: str = typer.Argument(..., help="The registered host to forget.")):
    """Forget a host (its known key stays in offload's known_hosts)."""
    from offload.cli.hosts import remove_host  # lazy: keeps `offload --help` fast

    raise typer.Exit(remove_host(name))


@hosts_app.command("set")
def hosts_set(
    name: str = typer.Argument(..., help="A registered host."),
    key: Optional[str] = typer.Argument(None, help="A hosts.yaml key (python, workdir, gpus, port, ...), or env.VARIABLE."),
    value: Optional[str] = typer.Argument(None, help="Its new value, checked as hosts.yaml is."),
    default: bool = typer.Option(False, "--default", help="Make NAME the default host (the first in hosts.yaml)."),
    unset: bool = typer.Option(False, "--unset", help="Remove KEY from the host, back to its default."),
):
    """Change one setting of a registered host in place, or make it the default."""
    from offload.cli.hosts_set import set_host  # lazy: keeps `offload --help` fast

    raise typer.Exit(set_host(name, key, value, default, unset))


@hosts_app.command("clean")
def hosts_clean(
    name: str = typer.Argument(..., help="A registered host."),
    older_than: float = typer.Option(7.0, "--older-than", min=0, metavar="DAYS", help="Remove only directories unused for this many days."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Remove them without asking."),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help="Seconds to wait for the host's SSH banner."),
):
    """List the project directories under the host's workdir and remove old ones, after confirmation.

    Never one a run or a sync is using, and nothing outside the workdir.
    """
    from offload.cli.hosts_clean import clean_host  # lazy: keeps `offload --help` fast

    raise typer.Exit(clean_host(name, older_than, yes, connect_timeout))


@hosts_app.command("disconnect")
def hosts_disconnect():
    """Close the SSH connections kept open between syncs (the link keeper)."""
    from offload.keeper_client import stop_keeper  # lazy: keeps `offload --help` fast

    print(f"offload: {stop_keeper()}", file=sys.stderr)


@hosts_app.command("check")
def hosts_check(
    name: Optional[str] = typer.Argument(None, help="One host (default: all; `local` is this machine)."),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=CONNECT_TIMEOUT_HELP),
    bench: bool = typer.Option(False, "--bench", help="Also measure the matmul ceiling (about 10 s) and keep it for MFU."),
    bench_seconds: float = typer.Option(10.0, "--bench-seconds", min=0.5, help="How long the matmul probe runs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also list the CPU flags its peak is reckoned from."),
):
    """Reach each host and report Python, torch, CUDA, GPUs, CPU, peak TFLOPS and free disk."""
    from offload.cli.hosts_check import check_hosts  # lazy: keeps `offload --help` fast

    raise typer.Exit(check_hosts(name, connect_timeout, bench_seconds if bench else None, verbose))


def run_cli(argv: list, log_internal=lambda exc: None) -> int:
    """Run one command line; the exit code, every error printed as one line. log_internal(exc) sees each
    internal error (the link keeper logs its traceback)."""
    DEBUG["on"] = False
    INVOCATION["argv"] = list(argv)
    try:
        plain_command(app)(args=argv, prog_name="offload")  # app's own command, with plain metavars in --help
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except OffloadError as exc:
        hint = f" (hint: {exc.hint})" if exc.hint else ""
        print(f"offload: error: {exc.message}{hint}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a bare traceback
        if "--debug" in argv[:1] or DEBUG["on"]:
            raise
        log_internal(exc)
        print(f"offload: internal error: {type(exc).__name__}: {exc} (run `offload --debug ...` for the traceback)",
              file=sys.stderr)
        return 70
    return 0


def main() -> None:
    sys.exit(run_cli(sys.argv[1:]))
