"""Following a run on its host: its output from a byte offset to the end, surviving outages of the link, for one
node or for every node of a job at once."""
from __future__ import annotations

import queue
import signal
import threading

from offload.errors import LinkLost, OffloadError

SILENCE_LIMIT_S = 15  # the agent ticks every 2 s while the job is quiet; this much silence is a dead link


def follow(agent, run_dir: str, offset: int, sink, metrics_offset: int = 0, until_now: bool = False,
           job_input=None) -> dict:
    """Stream the run's log from `offset` into `sink` until the job ends (returns the `exit` message), or
    with until_now only up to what the host has now (returns an `eof` message with the run's status). With
    job_input (job_input.py), our stdin goes to the job meanwhile."""
    agent.send("follow", run_dir=run_dir, offset=offset, metrics_offset=metrics_offset, until_now=until_now,
               stdin=job_input is not None)
    if job_input is not None:
        job_input.attach(agent)
    while True:
        message = agent.recv(timeout=SILENCE_LIMIT_S)
        kind = message["t"]
        if kind in ("output", "metrics"):
            expected = offset if kind == "output" else metrics_offset
            if message["offset"] != expected:
                raise OffloadError(f"{kind} from {agent.label} arrived out of order (at {message['offset']}, expected {expected})")
            data = b"".join(agent.read_blob(message["size"]))
            if kind == "output":
                sink.write(data)
                offset += len(data)
            else:
                sink.metrics(data)
                metrics_offset += len(data)
        elif kind in ("exit", "eof"):
            return message
        elif kind == "stdin_ok" and job_input is not None:
            job_input.acknowledged(message)
        elif kind != "tick":
            raise OffloadError(f"unexpected message from {agent.label} while following: {kind}")


def exit_code_of(exit_message: dict) -> int:
    """The shell's convention: the job's exit code, or 128 + signal number when a signal ended it."""
    if exit_message.get("state") in ("lost", "failed"):  # failed: the supervisor, not the job (see its error)
        return 1
    if exit_message.get("signal"):
        return 128 + int(signal.Signals[exit_message["signal"]])
    return int(exit_message.get("exit_code") or 0)


def follow_run(link, run_dir: str, sink, reconnect_for: float, job_input=None) -> dict:
    """Follow to the end (the `exit` message), reconnecting after each outage of a link that can."""
    while True:
        try:
            return follow(link.agent, run_dir, sink.log_bytes, sink, sink.metrics_bytes, job_input=job_input)
        except LinkLost as exc:
            if not link.reconnects or reconnect_for <= 0:
                raise
            link.reconnect(exc.reason, reconnect_for, sink.log_bytes)


def follow_all(pairs: list, reconnect_for: float, on_failure, job_input=None) -> tuple:
    """Follow every (link, run_dir, sink) at once until all have ended; on_failure(index, ended) is called for the
    first that ends with a non-zero exit (ended: each one's exit message so far, None for those still running). Returns each one's exit message, in order, and the index of the first
    failure (None if none failed). Following happens in threads: Ctrl-C reaches the caller at once. job_input, if
    any, is the first one's stdin."""
    finished = queue.Queue()

    def follow_one(index: int, link, run_dir: str, sink) -> None:
        try:
            finished.put((index, follow_run(link, run_dir, sink, reconnect_for, job_input if index == 0 else None)))
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            finished.put((index, exc))

    for index, (link, run_dir, sink) in enumerate(pairs):
        threading.Thread(target=follow_one, args=(index, link, run_dir, sink), daemon=True).start()
    ended, first_failed = [None] * len(pairs), None
    for _ in pairs:
        index, result = finished.get()
        if isinstance(result, Exception):
            raise result
        ended[index] = result
        if exit_code_of(result) != 0 and first_failed is None:
            first_failed = index
            on_failure(index, ended)
    return ended, first_failed
