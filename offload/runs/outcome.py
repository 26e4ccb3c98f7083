"""How a run ended, recorded and said: the exit code and the host's end time into meta.json and one line when it
failed; the summary of MFU and friends with hints, for a run followed to its end or followed again (logs)."""
from __future__ import annotations

from offload.console import say
from offload.mfu.measurement import RunMeasurement
from offload.mfu.report import gpu_rows, print_summary, summary_rows
from offload.runs.estimates import gpu_estimates
from offload.runs.follow import exit_code_of
from offload.runs.record import duration_s
from offload.runs.run_state import STOPPED_WAITING

BUSY_EXIT = 75  # EX_TEMPFAIL: the host is busy, try again later


def describe_failed(run_id: str, host: str, status: dict) -> str:
    """A run whose supervisor failed (see remote_agent/supervisor_error.py), in one line."""
    return f"run {run_id} failed on {host}: {status.get('error')} (fix that, then run again)"


def finish(record, finished: dict) -> int:
    """The exit code of a run that ended with `finished` (its exit or status message), recorded (when: the
    host's end time) and said."""
    code = exit_code_of(finished)
    record.end(finished, exit_code=code, signal=finished.get("signal"), state=finished.get("state"),
               stopped_waiting=bool(finished.get("stopped_waiting")))
    if finished.get("stopped_waiting"):
        say(f"run {record.run_id} was {STOPPED_WAITING} for the host's GPU: it never started")
    elif finished.get("state") == "failed":
        say(describe_failed(record.run_id, record.meta.get("host", "the host"), finished))
    elif finished.get("state") == "lost":
        say(f"run {record.run_id} was lost: its supervisor died without recording an exit")
    elif finished.get("signal"):
        say(f"run {record.run_id} was killed by {finished['signal']}")
    elif code:
        say(f"run {record.run_id} exited with code {code}")
    return code


def nodes_outcome(nodes: list, ended: list, first_failed: int | None, record) -> int:
    """The run's exit code: 0 when every node succeeded, else that of the node that failed first, named."""
    if len(nodes) == 1:
        return finish(record, ended[0])
    record.update(node_exits=[exit_code_of(message) for message in ended])
    if first_failed is None:
        return finish(record, ended[0])
    node, message = nodes[first_failed], ended[first_failed]
    code = finish(record, message)
    what = f"was killed by {message['signal']}" if message.get("signal") else f"failed with exit code {code}"
    say(f"{node.label} ({node.target.address}) {what}; the other nodes were stopped")
    record.update(failed_node=node.rank, failed_host=node.target.name)
    return code


def run_end_status(statuses: list) -> dict:
    """A multi-node run's status as one: the first node that failed, else node 0."""
    failed = [status for status in statuses if status.get("state") == "lost" or exit_code_of(status)]
    return failed[0] if failed else statuses[0]


def report(record, measurement, estimates=lambda figures: []) -> None:
    """MFU and friends into meta.json; the summary table, estimates(figures) (rows: what the same work would
    take elsewhere) and hints to the terminal."""
    figures = measurement.end_meta()
    record.update(**figures)
    if not figures["iterations"]:  # no MFU was measured: only the GPUs' own figures, where the host has them
        rows = gpu_rows(figures)
        if rows:
            print_summary(rows)
        return
    print_summary(summary_rows(measurement, figures, duration_s(record.meta)), estimates(figures))
    if figures["mfu"] is None or figures["mfu"] < 0.5:
        for hint in measurement.hints(figures):
            say(f"hint: {hint}")


def report_recorded(record, project_root) -> None:
    """The end of a run followed again (`offload logs`), said as a followed run's is: its figures rebuilt from
    the laptop's output.log and metrics.jsonl, byte-for-byte copies of the host's once followed to the end."""
    meta = record.meta
    measurement = RunMeasurement.from_meta(meta)
    node_dirs = [record.dir / f"node{rank}" for rank in range(len(meta["nodes"]))] if meta.get("nodes") else [record.dir]
    for node_dir in node_dirs:
        measurement.replay(read_or_empty(node_dir / "output.log"), read_or_empty(node_dir / "metrics.jsonl"))
    args, script = meta.get("args") or [], meta.get("script") or ""
    report(record, measurement, lambda figures: gpu_estimates(figures, args, script, project_root) if meta.get("fallback") else [])


def read_or_empty(path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
