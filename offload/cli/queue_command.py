"""`offload queue [HOST] [--clear]`: the host's line for its GPU lock, whoever's laptop the runs came from: the
run that holds the lock, then each waiting run in the order it will start (remote_agent/waiting_line.py).
`--clear` takes this laptop's waiting runs out of the line (as `offload stop` does each one)."""
from __future__ import annotations

import shlex
import socket
import time

from remote_agent.protocol import HOST_LOCK

from offload.config.resolve import registered_target
from offload.console import add_plain_row, say, table_console
from offload.transport.links import open_link


def show_queue(host_name: str | None, clear: bool, connect_timeout: float) -> int:
    target = registered_target(host_name, "show the line of")
    with open_link(target, connect_timeout) as link:
        line = link.agent.request("queue", lock=HOST_LOCK, clear=socket.gethostname() if clear else None)
    for run_id in line.get("cleared") or []:
        say(f"run {run_id} taken out of the line on {target.name}: it will not run")
    if clear and not line.get("cleared"):
        say(f"no run of this laptop ({socket.gethostname()}) waits on {target.name}")
    holder, waiting = line.get("holder"), line.get("waiting") or []
    if holder is None and not waiting:
        say(f"{target.name}: nothing runs and nothing waits")
        return 0
    print_line(holder, waiting)
    return 0


def print_line(holder: dict | None, waiting: list) -> None:
    from rich.table import Table  # lazy: rich costs start-up time; only a listing pays it

    table = Table("place", "run", "laptop", "submitted", "command", box=None)
    if holder is not None:
        add_plain_row(table, "running", holder.get("run_id") or "?", holder.get("laptop") or "?",
                      clock(holder.get("since")), command(holder.get("argv")))
    for entry in waiting:
        add_plain_row(table, entry["place"], entry.get("run_id") or "?", entry.get("laptop") or "?",
                      clock(entry.get("submitted")), command(entry.get("argv")))
    table_console().print(table)


def clock(seconds) -> str:
    """When, as the laptop's clock reads it: the time of day today, else the date too."""
    if not isinstance(seconds, (int, float)):
        return "?"
    stamp = time.localtime(seconds)
    same_day = time.strftime("%Y-%m-%d", stamp) == time.strftime("%Y-%m-%d")
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", stamp)


def command(argv) -> str:
    """The job's command as typed: the host's python shortened to its name."""
    if not isinstance(argv, list) or not argv:
        return "?"
    words = [str(word) for word in argv]
    words[0] = words[0].rsplit("/", 1)[-1]
    return shlex.join(words)
