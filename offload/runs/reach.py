"""Reach a recorded run's host again (the local agent for a local run): for logs, status, stop and fetch."""
from __future__ import annotations

from contextlib import contextmanager

from offload.config import hosts
from offload.config.hoststate import LOCAL
from offload.config.local_target import LocalTarget
from offload.config.resolve import registered_target, resolve
from offload.errors import OffloadError
from offload.runs.outcome import finish
from offload.runs.record import RUNNING, ended, find_run, load_runs, node_meta, record_of
from offload.runs.run_state import ENDED
from offload.transport.links import open_link


def target_of(meta: dict):
    """The target the run (or one node of it: record.node_meta) ran on, as hosts.yaml says it is reached now."""
    if meta.get("host") == LOCAL:
        return LocalTarget()
    registry = hosts.load()
    if meta.get("host") not in registry.hosts:
        raise OffloadError(f"run {meta['run_id']} ran on {meta.get('host')!r}, which is no longer registered",
                           hint=f"register it again: offload hosts add {meta.get('host')} [user@]hostname")
    return resolve(meta["host"], registry.get(meta["host"]))


def run_or_host(project_root, where: str | None, doing: str) -> tuple:
    """(the run WHERE names, or None; the target to reach): a registered host's name (None: the default host),
    else a run, whose node 0's host is the target. doing: what there is no host to do, for registered_target."""
    run = None if where is None or where in hosts.load().hosts else find_run_now(project_root, where)
    return run, target_of(node_meta(run, 0)) if run is not None else registered_target(where, doing)


@contextmanager
def link_for(meta: dict, connect_timeout: float = 10.0):
    """A link to the run's host, closed (or kept, inside the link keeper) afterwards."""
    with open_link(target_of(meta), connect_timeout) as link:
        yield link


@contextmanager
def agent_for(meta: dict, connect_timeout: float = 10.0):
    """The agent of the run's host (see link_for), for requests that need no reconnecting."""
    with link_for(meta, connect_timeout) as link:
        yield link.agent


def find_run_now(project_root, reference: str) -> dict:
    """find_run, where `running` is the run running now: the host of each run the laptop has no end for is asked
    first, and the end of those that ended there is recorded (a host that cannot be reached is not waited for)."""
    if reference == RUNNING:
        for meta in load_runs(project_root):
            if not ended(meta):
                record_if_ended(project_root, meta)
    return find_run(project_root, reference)


def record_if_ended(project_root, meta: dict) -> None:
    try:
        with link_for(node_meta(meta, 0)) as link:
            status = link.agent.request("status", run_dir=meta["run_dir"])
    except OffloadError:  # unreachable now: the run stays as the laptop knows it
        return
    if status.get("state") in ENDED:
        finish(record_of(project_root, meta), status)
