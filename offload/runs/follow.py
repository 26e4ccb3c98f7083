"""Following a run on its host: its output from a byte offset to the end, surviving outages of the link, for one
node or for every node of a job at once."""
from __future__ import annotations

import queue
import signal
import threading
from contextlib import contextmanager

from offload.errors import LinkLost, OffloadError

SILENCE_LIMIT_S = 15  # the agent ticks every 2 s while the job is quiet; this much silence is a dead link
# The main thread never waits unbounded: CPython can miss the wake-up for a signal that comes just as a lock
# wait begins (its handler then runs only when the wait ends), so a Ctrl-C waits at most this long.
WAKE_S = 0.2


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
        elif kind == "gpu":  # the host's GPUs now, every few seconds (remote_agent/gpu_usage.py)
            if hasattr(sink, "gpu"):
                sink.gpu(message.get("gpus") or [])
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
            if not link.reconnects or reconnect_for <= 0 or getattr(sink, "closed", False):  # closed: nobody watches
                raise
            link.reconnect(exc.reason, reconnect_for, sink.log_bytes)


def stop_following() -> None:
    raise KeyboardInterrupt


class HeldInterrupt:
    """Ctrl-C held from the host's answer to a start until the run is followed, then handed to whoever would have
    had it: a press then is about the run (stop it, or detach), never lost in between. Only in the main thread, and only where a handler would take it (not where
    SIGINT is ignored)."""

    def __init__(self):
        self.previous, self.pressed = None, False

    def hold(self) -> None:
        if threading.current_thread() is threading.main_thread() and callable(signal.getsignal(signal.SIGINT)):
            self.previous = signal.signal(signal.SIGINT, self.on_press)

    def on_press(self, signum, frame) -> None:
        self.pressed = True

    def release(self) -> None:
        previous, self.previous = self.previous, None
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
            if self.pressed:
                self.pressed = False
                previous(signal.SIGINT, None)  # KeyboardInterrupt, or a local run's stop

    def __enter__(self) -> "HeldInterrupt":
        self.hold()
        return self

    def __exit__(self, *exc) -> None:
        """Not released (busy, failed, detached: nothing followed): the handler back, a press meanwhile forgotten."""
        self.pressed = False
        self.release()


class QueuedInterrupt:
    """Ctrl-C while the followers run, put on their queue as INTERRUPTED rather than raised in the main thread:
    a KeyboardInterrupt raised inside a get could take a follower's result with it; a queued press cannot, and
    one pressed while the followers start waits until all are started. The handler there before still has the
    press first (a local run's stop); only what it would raise is queued. In the main thread only, and only
    where a handler would take it (not where SIGINT is ignored)."""

    def __init__(self, presses):
        self.presses, self.previous = presses, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and callable(signal.getsignal(signal.SIGINT)):
            self.previous = signal.signal(signal.SIGINT, self.on_press)
        return self

    def on_press(self, signum, frame) -> None:
        try:
            self.previous(signum, frame)
        except KeyboardInterrupt:
            self.presses.put(INTERRUPTED)  # SimpleQueue.put: safe in a signal handler, even mid-get

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    @contextmanager
    def raising(self):
        """Ctrl-C raised again meanwhile (a prompt's second Ctrl-C is its no)."""
        if self.previous is None:
            yield
            return
        signal.signal(signal.SIGINT, self.previous)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, self.on_press)


INTERRUPTED = (None, KeyboardInterrupt)  # a press, on the followers' queue


def follow_all(pairs: list, reconnect_for: float, on_failure, on_interrupt=stop_following, job_input=None) -> tuple:
    """Follow every (link, run_dir, sink) at once until all have ended; on_failure(index, ended) is called for the
    first that ends with a non-zero exit (ended: each one's exit message so far, None for those still running).
    Returns each one's exit message, in order, and the index of the first failure (None if none failed).
    Following happens in threads: Ctrl-C reaches the caller at once, as on_interrupt(), which raises
    KeyboardInterrupt to stop following, or returns to follow on to the end. job_input, if any, is the first
    one's stdin."""
    finished = queue.SimpleQueue()

    def follow_one(index: int, link, run_dir: str, sink) -> None:
        try:
            finished.put((index, follow_run(link, run_dir, sink, reconnect_for, job_input if index == 0 else None)))
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            finished.put((index, exc))

    ended, first_failed = [None] * len(pairs), None
    with QueuedInterrupt(finished) as presses:
        for index, (link, run_dir, sink) in enumerate(pairs):
            threading.Thread(target=follow_one, args=(index, link, run_dir, sink), daemon=True).start()
        while None in ended:
            try:
                index, result = finished.get(timeout=WAKE_S)
            except queue.Empty:
                continue
            if result is KeyboardInterrupt:
                with presses.raising():
                    on_interrupt()
                continue
            if isinstance(result, Exception):
                raise result
            ended[index] = result
            if exit_code_of(result) != 0 and first_failed is None:
                first_failed = index
                on_failure(index, ended)
    return ended, first_failed
