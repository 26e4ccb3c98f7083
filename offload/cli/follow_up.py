"""`offload logs`, `offload status` and `offload stop`: a recorded run, looked at (or ended) again."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from offload.runs import sinks as stream
from offload.runs.reach import find_run, link_for, node_metas, record_of
from offload.runs.job import describe_failed, describe_stop, finish, say
from offload.runs.record import project_root_of
from offload.transport.link import follow_run

ENDED = ("exited", "lost", "failed")  # a run in one of these states will not change any more


def describe_status(status: dict) -> str:
    state = status.get("state")
    if state == "running":
        return f"running (pid {status.get('pid')}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(status['started_at']))})"
    if state == "waiting":
        holder = status.get("holder") or {}
        return f"waiting for the host's GPU (held by run {holder.get('run_id', '?')})"
    if state == "exited" and status.get("signal"):
        return f"killed by {status['signal']}"
    if state == "exited":
        return f"exited {status.get('exit_code')}"
    if state == "lost":
        return "lost (its supervisor died without recording an exit)"
    if state == "failed":
        return f"failed: {status.get('error')}"
    return state or "unknown"


def record_end(project_root: Path, meta: dict, status: dict) -> None:
    """Write an ended run's exit into meta.json, if the laptop has not recorded it yet."""
    if status.get("state") in ENDED and meta.get("exit_code") is None and not meta.get("stopped"):
        finish(record_of(project_root, meta), status)


def run_end_status(statuses: list) -> dict:
    """A multi-node run's status as one: the first node that failed, else node 0."""
    failed = [status for status in statuses if status.get("state") == "lost" or stream.exit_code_of(status)]
    return failed[0] if failed else statuses[0]


def logs_command(project, reference: str, follow: bool, reconnect_for: float) -> int:
    root = project_root_of(project)
    meta = find_run(root, reference)
    record = record_of(root, meta)
    record.dir.mkdir(parents=True, exist_ok=True)
    if record.log_path.exists():  # what the laptop has already, then what it has not
        sys.stdout.buffer.write(record.log_path.read_bytes())
        sys.stdout.buffer.flush()
    if meta.get("nodes"):
        return multinode_logs(root, meta, record, follow, reconnect_for)
    with link_for(meta) as link:
        sink = stream.RunOutput(record.dir)
        try:
            if follow:
                ended = follow_run(link, meta["run_dir"], sink, reconnect_for if link.target else 0)
            else:
                ended = stream.follow(link.agent, meta["run_dir"], sink.log_bytes, sink, sink.metrics_bytes, until_now=True)
        except KeyboardInterrupt:
            return 130
        finally:
            sink.close()
    if ended.get("state") == "failed" and meta.get("exit_code") is not None:  # else record_end says it
        say(describe_failed(meta["run_id"], meta["host"], ended))
    record_end(root, meta, ended)
    return 0


def multinode_logs(root: Path, meta: dict, record, follow: bool, reconnect_for: float) -> int:
    from contextlib import ExitStack

    from offload.runs.multinode import Node, catch_up

    with ExitStack() as stack:
        nodes = [Node(rank, None, stack.enter_context(link_for(node))) for rank, node in enumerate(node_metas(meta))]
        for node, node_info in zip(nodes, node_metas(meta)):
            node.target, node.run_dir = node.link.target, node_info["run_dir"]
        try:
            ended = catch_up(nodes, record, follow, reconnect_for)
        except KeyboardInterrupt:
            return 130
    record_end(root, meta, run_end_status(ended))
    return 0


def status_command(project, reference: str) -> int:
    root = project_root_of(project)
    meta = find_run(root, reference)
    statuses = []
    for rank, node in enumerate(node_metas(meta)):
        with link_for(node) as link:
            statuses.append(link.agent.request("status", run_dir=node["run_dir"]))
        where = f"node{rank} {node['host']}" if meta.get("nodes") else node["host"]
        print(f"{meta['run_id']} on {where}: {describe_status(statuses[-1])}")
    if all(status.get("state") in ENDED for status in statuses):
        record_end(root, meta, run_end_status(statuses))
    return 0


def stop_command(project, reference: str, grace: float) -> int:
    root = project_root_of(project)
    meta = find_run(root, reference)
    statuses = []
    for node in node_metas(meta):  # every node of a multi-node run
        with link_for(node) as link:
            stopped = link.agent.request("stop", run_dir=node["run_dir"], grace=grace, timeout=grace + 60)
            statuses.append(link.agent.request("status", run_dir=node["run_dir"]))
        say(describe_stop(meta["run_id"], node["host"], stopped))
    record_end(root, meta, run_end_status(statuses))
    return 0
