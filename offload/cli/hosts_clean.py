"""`offload hosts clean NAME`: the project directories under the host's workdir, with their size and last use, and
those not used for a while removed once confirmed. The host decides what is a project directory and what is in
use (remote_agent/cleaning.py): a run or a sync in one keeps it, whatever was confirmed."""
from __future__ import annotations

import sys
import time

from rich.table import Table

from offload.config import hosts
from offload.config.resolve import resolve
from offload.console import add_plain_row, ask_yes_no, human_size, interactive, say, table_console
from offload.errors import OffloadError
from offload.transport.link import ask_to_trust
from offload.transport.links import open_link

DAY_S = 24 * 3600


def clean_host(name: str, older_than_days: float, yes: bool, timeout: float) -> int:
    target = resolve(name, hosts.load().get(name))
    with open_link(target, timeout, ask_to_trust) as link:
        dirs = link.agent.request("project_dirs", workdir=target.workdir)["dirs"]
        if not dirs:
            say(f"no project directories in {target.workdir} on {name}")
            return 0
        old = [d for d in dirs if not d["in_use"] and time.time() - d["last_used"] >= older_than_days * DAY_S]
        show(dirs, old, older_than_days)
        if not old:
            say(f"nothing to remove on {name}: none idle for {older_than_days:g} days or more (--older-than DAYS)")
            return 0
        total = human_size(sum(d["size"] for d in old))
        question = f"remove {len(old)} project director{'y' if len(old) == 1 else 'ies'} ({total}) from {name}?"
        if not yes:
            if not interactive():
                raise OffloadError("nothing removed: cannot confirm without a terminal",
                                   hint=f"check the list above, then: offload hosts clean {name} --yes")
            if not ask_yes_no(question):
                say("nothing removed")
                return 0
        return remove(link.agent, target, old)


def show(dirs: list, old: list, older_than_days: float) -> None:
    table = Table("directory", "size", "last used", "", box=None)
    removing = {d["name"] for d in old}
    for d in dirs:
        when = f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(d['last_used']))} ({age(d['last_used'])})"
        verdict = f"in use: {d['in_use']}" if d["in_use"] else "remove" if d["name"] in removing else \
            f"kept: used within {older_than_days:g} days"
        add_plain_row(table, d["name"], human_size(d["size"]), when, verdict)
    table_console().print(table)
    sys.stdout.flush()


def remove(agent, target, old: list) -> int:
    freed, kept = 0, 0
    for d in old:
        result = agent.request("remove_project", workdir=target.workdir, name=d["name"])
        if result["removed"]:
            freed += d["size"]
        else:  # a run or sync began since the list was made
            kept += 1
            say(f"kept {d['name']}: {result['in_use']}")
    say(f"removed {len(old) - kept} project director{'y' if len(old) - kept == 1 else 'ies'} from {target.name}, "
        f"{human_size(freed)} freed")
    return 0


def age(timestamp: float) -> str:
    seconds = max(time.time() - timestamp, 0)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < DAY_S:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / DAY_S:.0f} days ago"
