"""What `offload run` was asked to do: its options, and the ports it forwards while it follows the run."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from offload.config import project as project_config
from offload.config.ports import merged
from offload.errors import OffloadError


@dataclass
class RunOptions:
    script: str | None = None     # None only with resume: RUN's own command
    args: list = field(default_factory=list)
    host: str | None = None
    hosts: list = field(default_factory=list)  # several: one job across them all
    nproc_per_node: int | None = None
    no_fallback: bool = False
    connect_timeout: float = 10.0
    project: Path | None = None
    detach: bool = False            # return once the job has started
    reconnect_for: float = 600.0    # seconds to keep reconnecting after the link drops while following
    fetch: list = field(default_factory=list)  # patterns to fetch when the run ends
    no_wait: bool = False           # exit 75 instead of waiting for a busy host
    resume: str | None = None       # a run whose command runs again, its fetched files put back
    force: bool = False             # replace files changed on the host since they were synced
    include: list = field(default_factory=list)  # patterns sent whatever the ignore rules say (selection.py)
    command_line: list | None = None  # the arguments `offload` was given, to say the command that sends a file
    env: dict = field(default_factory=dict)  # --env KEY=VALUE: for the job, over the host's env
    module: bool = False            # script is a module name: `python -m script`
    forward: list = field(default_factory=list)  # --forward: config/ports.PortForward each, while followed
    bind: str | None = None         # --bind: the laptop address forwarded ports listen on (default 127.0.0.1)
    queue: bool = False             # --queue: return once the run is in the host's line (or started)


def checked(options: RunOptions) -> RunOptions:
    """The options, or a one-line error for a combination that cannot mean anything."""
    if options.queue and options.no_wait:
        raise OffloadError("--queue waits its turn and --no-wait gives up at once", hint="give one of them")
    if options.queue and len(options.hosts) > 1:
        raise OffloadError("--queue queues a run on one host", hint="queue it with one --host")
    return options


def forwarded_ports(root: Path, options: RunOptions) -> list:
    """--forward's ports and offload.yaml's `ports:`; none with --detach or --queue, where nothing follows the
    run (the command line's then are an error: they would never be forwarded)."""
    if options.detach or options.queue:
        if options.forward:
            flag = "--detach" if options.detach else "--queue"
            raise OffloadError(f"--forward forwards while the run is followed, and {flag} does not follow it",
                               hint="forward once it runs, with: offload forward RUN PORT")
        return []
    return merged(options.forward, project_config.load(root).ports)
