"""`offload logs`, `offload status` and `offload stop`: a recorded run, looked at (or ended) again, on each of
its nodes (one for a single-host run)."""
from __future__ import annotations

import sys
import threading
from contextlib import ExitStack

from offload.console import say
from offload.mfu.gpu_figures import figures_text, node_figures
from offload.runs.follow import follow, follow_all
from offload.runs.announce import announce_end
from offload.runs.outcome import finish, report_recorded, run_end_status
from offload.runs.reach import find_run_now, link_for
from offload.runs.record import node_metas, project_root_of, record_of
from offload.runs.run_state import ENDED, describe_status, describe_stop
from offload.runs.sinks import NodeOutput, StatusLine



def record_end(project_root, meta: dict, status: dict) -> None:
    """Write an ended run's exit into meta.json, if the laptop has not recorded it yet."""
    if status.get("state") in ENDED and meta.get("exit_code") is None:
        finish(record_of(project_root, meta), status)


def logs_command(project, reference: str, following: bool, reconnect_for: float) -> int:
    root = project_root_of(project)
    meta = find_run_now(root, reference)
    record = record_of(root, meta)
    record.dir.mkdir(parents=True, exist_ok=True)
    if record.log_path.exists():  # what the laptop has already, then what it has not
        sys.stdout.buffer.write(record.log_path.read_bytes())
        sys.stdout.buffer.flush()
    try:
        ended = catch_up(record, node_metas(meta), bool(meta.get("nodes")), following, reconnect_for)
    except KeyboardInterrupt:
        return 130
    status = run_end_status(ended)
    if all(message["t"] == "exit" for message in ended) and status.get("state") != "busy":  # busy: it never ran
        # Ended, and the laptop's copy of its output is whole: the run ends here as it does when followed.
        code = finish(record, status)
        report_recorded(record, root)
        if following:
            announce_end(record, code)
    return 0


def catch_up(record, nodes: list, prefixed: bool, following: bool, reconnect_for: float) -> list:
    """Every node's output since the laptop's last byte (prefixed by node when `prefixed`), up to now or, when
    following, to the end; each node's exit or eof message, in node order."""
    lock, status = threading.Lock(), StatusLine()
    with ExitStack() as stack:
        combined = stack.enter_context(open(record.dir / "output.log", "ab")) if prefixed else None
        links = [stack.enter_context(link_for(node)) for node in nodes]
        sinks = [NodeOutput(record.dir, f"node{rank} {node['host']}" if prefixed else None, lock, status,
                            combined=combined) for rank, node in enumerate(nodes)]
        for sink in sinks:
            stack.callback(sink.close)
        if following:
            return follow_all([(link, node["run_dir"], sink) for link, node, sink in zip(links, nodes, sinks)],
                              reconnect_for, lambda failed, ended: None)[0]
        return [follow(link.agent, node["run_dir"], sink.log_bytes, sink, sink.metrics_bytes, until_now=True)
                for link, node, sink in zip(links, nodes, sinks)]


def status_command(project, reference: str) -> int:
    root = project_root_of(project)
    meta = find_run_now(root, reference)
    statuses = []
    for rank, node in enumerate(node_metas(meta)):
        with link_for(node) as link:
            statuses.append(link.agent.request("status", run_dir=node["run_dir"], gpus=True))
        where = f"node{rank} {node['host']}" if meta.get("nodes") else node["host"]
        gpus = figures_text(node_figures(statuses[-1]["gpus"])) if statuses[-1].get("gpus") else ""
        print(f"{meta['run_id']} on {where}: {describe_status(statuses[-1])}" + (f"; {gpus}" if gpus else ""))
    if all(status.get("state") in ENDED for status in statuses):
        record_end(root, meta, run_end_status(statuses))
    return 0


def stop_command(project, reference: str, grace: float) -> int:
    root = project_root_of(project)
    meta = find_run_now(root, reference)
    statuses = []
    for node in node_metas(meta):  # every node of a multi-node run
        with link_for(node) as link:
            stopped = link.agent.request("stop", run_dir=node["run_dir"], grace=grace, timeout=grace + 60)
            statuses.append(link.agent.request("status", run_dir=node["run_dir"]))
        say(describe_stop(meta["run_id"], node["host"], stopped, statuses[-1]))
    record_end(root, meta, run_end_status(statuses))
    return 0
