"""A run's `on_exit:` hook, run by its supervisor on the host once the job has ended and before its exit is
recorded: so a webhook fires even with the laptop closed, and a followed run shows the hook's output last.

`sh -c COMMAND` in the job's directory, with the job's environment and OFFLOAD_RUN_ID, OFFLOAD_EXIT_CODE (empty
when a signal ended it), OFFLOAD_SIGNAL (its name, or empty), OFFLOAD_WALL_S, OFFLOAD_FINAL_LOSS and OFFLOAD_MFU
(empty where unknown). Its stdout and stderr go to the run's log; a hook that fails, hangs past ON_EXIT_TIMEOUT_S
(then its whole group is killed) or cannot start is one line in the log, and never changes the recorded exit.

The final loss is the job's last: from metrics.jsonl (lib/offload_metrics.py), else the last `loss X` of its
log's tail (nanoGPT's `iter N: loss X, ...`). The MFU only from metrics.jsonl and the peak the laptop sent:
the model FLOPs the job reported over its compute time, against the device's peak; nanoGPT's own `mfu`
assumes an A100 and is not passed on as one.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess

ON_EXIT_TIMEOUT_S = 60.0
LOG_TAIL_BYTES = 64 << 10  # where the last loss of a plain log is looked for
WARMUP_STEPS = 3  # as the laptop's MFU (offload/mfu/tracker.py): the first steps pay for compilation and cold caches
LOSS = re.compile(rb"\bloss[\s:=]+(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def run_hook(hook: dict, job: dict, log, metrics_path: str, log_path: str, ended: dict) -> None:
    """ended: run_id, exit_code (None for a signal), signal (a name or None), wall_s."""
    figures = metrics_figures(metrics_path, hook.get("peak_tflops"))
    loss = figures.get("loss")
    if loss is None:
        loss = last_logged_loss(log_path)
    env = {**os.environ, **job["env"],
           "OFFLOAD_RUN_ID": ended["run_id"],
           "OFFLOAD_EXIT_CODE": "" if ended["exit_code"] is None else str(ended["exit_code"]),
           "OFFLOAD_SIGNAL": ended["signal"] or "",
           "OFFLOAD_WALL_S": f"{ended['wall_s']:.1f}",
           "OFFLOAD_FINAL_LOSS": "" if loss is None else f"{loss:g}",
           "OFFLOAD_MFU": "" if figures.get("mfu") is None else f"{figures['mfu']:.4f}"}
    log.flush()
    try:
        proc = subprocess.Popen(["sh", "-c", hook["command"]], cwd=job["cwd"], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    except OSError as exc:
        say(log, f"on_exit could not start: {exc.strerror}")
        return
    try:
        code = proc.wait(timeout=ON_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        say(log, f"on_exit was still running after {ON_EXIT_TIMEOUT_S:.0f} s: stopped")
        return
    if code:
        say(log, f"on_exit exited with code {code}" if code > 0 else f"on_exit was killed by {signal.Signals(-code).name}")


def say(log, text: str) -> None:
    log.write(f"offload: {text} (the run's own exit is as recorded)\n".encode())
    log.flush()


def metrics_figures(path: str, peak_tflops) -> dict:
    """{"loss": the last reported, "mfu": total flops over total seconds over the peak}, each where known."""
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    steps = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the job's end
        if isinstance(record, dict):
            steps.append(record)
    losses = [float(r["loss"]) for r in steps if isinstance(r.get("loss"), (int, float))]
    timed = [r for r in steps if isinstance(r.get("flops"), (int, float)) and isinstance(r.get("seconds"), (int, float))]
    timed = timed[min(WARMUP_STEPS, len(timed) - 1):] if timed else []  # all but the warm-up, never none
    flops, seconds = sum(r["flops"] for r in timed), sum(r["seconds"] for r in timed)
    mfu = flops / seconds / (peak_tflops * 1e12) if peak_tflops and seconds > 0 else None
    return {"loss": losses[-1] if losses else None, "mfu": mfu}


def last_logged_loss(path: str) -> float | None:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    found = LOSS.findall(tail)
    return float(found[-1]) if found else None
