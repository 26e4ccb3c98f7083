"""Following a run: its log from an offset, and the metrics lines its job writes, as they grow; then its end.
Meanwhile, on a host with nvidia-smi, the GPUs' utilisation, memory and power every few seconds (gpu_usage.py)."""
from __future__ import annotations

import os
import select
import sys
import time

from . import gpu_usage, host_dirs, protocol
from .protocol import send_blob
from .run_status import LIVE_STATES, LOG, METRICS, POLL_S, read_status

IDLE_TICK_S = 2.0  # while a job is quiet, a tick tells the laptop the link is alive


def follow(run_dir: str, offset: int, send, out, metrics_offset: int = 0, until_now: bool = False,
           inp=None, feeder=None) -> dict | None:
    """Send the log from `offset` (and whole new metrics lines) as they grow, then the exit; with
    until_now, only what is there now, then an `eof` with the status. Returns early if the laptop speaks:
    with a feeder (job_stdin.py), its stdin messages are served here, and any other message is returned for
    the agent to serve next."""
    run_dir = host_dirs.absolute(run_dir, "a run directory")
    status = read_status(run_dir)
    gpus = gpu_usage.Sampler.started() if not until_now and status["state"] in LIVE_STATES else None
    try:
        return follow_log(run_dir, status, offset, send, out, metrics_offset, until_now, inp, feeder, gpus)
    finally:
        if gpus is not None:
            gpus.stop()


def follow_log(run_dir: str, status: dict, offset: int, send, out, metrics_offset: int, until_now: bool, inp, feeder,
               gpus) -> dict | None:
    last_sent = time.monotonic()
    with open(os.path.join(run_dir, LOG), "rb") as log:
        log.seek(offset)
        while True:
            if feeder is not None:
                feeder.drain()
            metrics_offset += send_new_metrics(run_dir, metrics_offset, out)
            data = log.read(protocol.CHUNK)
            if data:
                send_blob(out, "output", offset, data)
                offset += len(data)
                last_sent = time.monotonic()
                continue
            if status["state"] not in LIVE_STATES:
                send("exit", **status, offset=offset, metrics_offset=metrics_offset)
                return None
            if until_now:
                send("eof", **status, offset=offset, metrics_offset=metrics_offset)
                return None
            sample = gpus.new() if gpus is not None else None
            if sample:
                send("gpu", gpus=sample)
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent > IDLE_TICK_S:
                send("tick", offset=offset)
                last_sent = time.monotonic()
            if laptop_spoke(POLL_S, inp):
                if feeder is None:
                    return None
                message = protocol.read_message(inp)
                if not feeder.take(message):
                    return message
            status = read_status(run_dir)  # read before the last drain of the log, so no output is missed


def send_new_metrics(run_dir: str, offset: int, out) -> int:
    """Send the metrics lines completed since `offset`; returns how many bytes were sent."""
    try:
        with open(os.path.join(run_dir, METRICS), "rb") as f:
            f.seek(offset)
            data = f.read(protocol.CHUNK)
    except FileNotFoundError:
        return 0
    data = data[:data.rfind(b"\n") + 1]  # a line still being written waits for its newline
    if data:
        send_blob(out, "metrics", offset, data)
    return len(data)


def laptop_spoke(timeout: float, inp=None) -> bool:
    """True when the laptop sent something (or hung up) while we were following: in `inp`'s buffer already
    (read ahead with a message served here), or on the descriptor."""
    if inp is not None and buffered(inp):
        return True
    try:
        readable, _, _ = select.select([sys.stdin.fileno()], [], [], timeout)
    except (OSError, ValueError):
        time.sleep(timeout)
        return False
    return bool(readable)


def buffered(inp) -> bool:
    """Whether `inp` (a BufferedReader) holds bytes already read from its descriptor, without waiting for more."""
    fd = inp.fileno()
    was_blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        return bool(inp.peek(1))
    except (BlockingIOError, OSError, ValueError):
        return False
    finally:
        os.set_blocking(fd, was_blocking)
