"""`offload forward RUN|HOST PORT...`: laptop ports forwarded to a host's, as `ssh -L PORT:127.0.0.1:PORT -N`
does, until Ctrl-C; the link is watched and reopened after an outage (the ports stay bound meanwhile)."""
from __future__ import annotations

import time
from pathlib import Path

from offload.config.ports import parse_forward
from offload.console import say
from offload.errors import LinkLost, OffloadError
from offload.runs.reach import run_or_host
from offload.runs.record import project_root_of
from offload.transport.forwarding import Forwards
from offload.transport.links import open_link

CHECK_S = 1.0  # how often the link's connection is looked at (no round trip) ...
PING_EVERY = 15  # ... and every this many looks, asked for an answer (a link dead without a word: a sleeping laptop)


def forward_ports(where: str, specs: list, project: Path | None, bind: str | None, connect_timeout: float,
                  reconnect_for: float) -> int:
    forwards = [parse_forward(spec, "port") for spec in specs]
    if not forwards:
        raise OffloadError("no port to forward", hint="offload forward RUN|HOST PORT... (e.g. offload forward last 6006)")
    run, target = run_or_host(project_root_of(project), where, "forward to")
    if getattr(target, "local", False):
        raise OffloadError(f"run {run['run_id']} ran on this machine (the CPU fallback): its ports are its own",
                           hint=f"open http://127.0.0.1:{forwards[0].remote}")
    with Forwards(forwards, bind) as forwarding, open_link(target, connect_timeout) as link:
        forwarding.attach(link)
        say("forwarding until Ctrl-C")
        try:
            watch(link, reconnect_for)
        except KeyboardInterrupt:
            say("stopped forwarding")
    return 0


def watch(link, reconnect_for: float) -> None:
    """Until Ctrl-C: reopen the link whenever its connection is gone (LinkLost once reconnect_for runs out)."""
    looks = 0
    while True:
        time.sleep(CHECK_S)
        looks += 1
        transport = link.client.get_transport() if link.client is not None else None
        reason = None
        if transport is None or not transport.is_active():
            reason = "the connection closed"
        elif looks % PING_EVERY == 0 and not link.answers():
            reason = "no answer to a ping"
        if reason is not None:
            if reconnect_for <= 0:
                raise LinkLost(link.target.name, reason)
            link.reconnect(reason, reconnect_for)
