"""`offload run --resume RUN`: RUN's command again (unless SCRIPT is given), with the files fetches of RUN wrote
put back in place; anything else in its files dir refuses the resume."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from offload.config.hoststate import LOCAL
from offload.console import say
from offload.errors import OffloadError
from offload.runs.fetched import files_dir, files_to_put_back, remember_fetched
from offload.runs.reach import agent_for
from offload.runs.record import find_run
from offload.runs.withheld import recorded_withheld, refuse_withheld
from offload.sync.fetch import fetch_listed, list_run


def resumed(root: Path, options) -> tuple:
    """The options with RUN's command (unless SCRIPT was given), and RUN's fetched files: (files dir, entries)."""
    previous = find_run(root, options.resume)
    shown = options.script
    if not options.script:
        if not previous.get("script"):
            raise OffloadError(f"run {previous['run_id']} has no recorded command to run again",
                               hint=f"give it: offload run --resume {previous['run_id']} SCRIPT [ARGS...]")
        shown, module = previous["script"], bool(previous.get("module"))
        options = replace(options, script=shown if module else str(root / shown),  # a path recorded from the root,
                          args=list(previous.get("args") or []), module=module)  # whatever the cwd is now
    files = files_dir(root, previous["run_id"])
    if not files.is_dir():
        if previous.get("host") != LOCAL:
            raise OffloadError(f"run {previous['run_id']} has no fetched files to put back",
                               hint=f"fetch them first: offload fetch {previous['run_id']}")
        fetch_local_run(previous, files)
    refuse_withheld(previous["run_id"], recorded_withheld(previous))
    entries = files_to_put_back(files, previous["run_id"])
    say(f"resuming run {previous['run_id']}: {shown} {' '.join(options.args)}".rstrip())
    return options, (files, entries)


def fetch_local_run(previous: dict, files: Path) -> None:
    """A local run's files are here: fetching them into its files dir is a copy."""
    with agent_for(previous) as agent:
        listing = list_run(agent, previous, [])
        refuse_withheld(previous["run_id"], listing["withheld"])
        summary = fetch_listed(agent, listing, files)
        remember_fetched(files, summary["files"] + summary["kept"])
