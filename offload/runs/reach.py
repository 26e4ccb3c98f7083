"""Find a recorded run and reach its host again: for logs, status, stop and fetch after `offload run`.

RUN is a run id, a unique prefix of one, or `last` (the project's latest run).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from offload.runs import record as runs
from offload.errors import OffloadError

LAST = "last"


def find_run(project_root: Path, reference: str) -> dict:
    """The meta.json of the run `reference` names, or a one-line error saying what to type instead."""
    recorded = runs.load_runs(project_root)
    if not recorded:
        raise OffloadError(f"no runs recorded in {project_root}", hint="start one with `offload run SCRIPT`")
    if reference == LAST:
        return recorded[-1]
    exact = [meta for meta in recorded if meta["run_id"] == reference]
    matches = exact or [meta for meta in recorded if meta["run_id"].startswith(reference)]
    if not matches:
        raise OffloadError(f"no run {reference!r} in {project_root}", hint="`offload runs` lists them")
    if len(matches) > 1:
        shown = ", ".join(meta["run_id"] for meta in matches[:4])
        raise OffloadError(f"{reference!r} names {len(matches)} runs ({shown}{', ...' if len(matches) > 4 else ''})",
                           hint="type more of the run id")
    return matches[0]


def node_meta(meta: dict, node: int) -> dict:
    """The run as seen from one of its nodes (a multi-node run's node N: its host and directories);
    a single-host run is its own node 0."""
    nodes = meta.get("nodes") or []
    if not nodes:
        if node:
            raise OffloadError(f"run {meta['run_id']} ran on one host: there is no node {node}")
        return meta
    if node >= len(nodes):
        raise OffloadError(f"run {meta['run_id']} has nodes 0 to {len(nodes) - 1}, not {node}")
    return {**meta, **{key: nodes[node][key] for key in ("host", "address", "project_dir", "run_dir")}}


def node_metas(meta: dict) -> list:
    """One meta per node of the run (one for a single-host run)."""
    return [node_meta(meta, node) for node in range(max(1, len(meta.get("nodes") or [])))]


def record_of(project_root: Path, meta: dict) -> runs.RunRecord:
    record = runs.RunRecord(project_root, meta["run_id"])
    record.meta = dict(meta)
    return record


@contextmanager
def link_for(meta: dict, connect_timeout: float = 10.0):
    """A Link to the run's host (the local agent for a local run), closed afterwards."""
    from offload.transport import agent as agents
    from offload.config import hosts
    from offload.config.resolve import resolve
    from offload.runs.job import LOCAL
    from offload.transport.link import Link

    if meta.get("host") == LOCAL:
        link = Link(None, None, agents.start_local())
    else:
        registry = hosts.load()
        if meta.get("host") not in registry.hosts:
            raise OffloadError(f"run {meta['run_id']} ran on {meta.get('host')!r}, which is no longer registered",
                               hint=f"register it again: offload hosts add {meta.get('host')} [user@]hostname")
        link = Link.to(resolve(meta["host"], registry.get(meta["host"])), connect_timeout)
    try:
        yield link
    finally:
        link.close()


@contextmanager
def agent_for(meta: dict, connect_timeout: float = 10.0):
    """The agent of the run's host (see link_for), for requests that need no reconnecting."""
    with link_for(meta, connect_timeout) as link:
        yield link.agent
