"""Starting a job on its host: the one `start` request (runs and setups alike), and what the host answers
(started, waiting for the host's GPU lock, busy, or failed before the job could start), in words."""
from __future__ import annotations

import socket
import time

from offload.console import say


def start_request(agent, *, run_dir: str, cwd: str, argv: list, env: dict, lock, wait: bool, run_id: str,
                  tree: dict | None, keep_tree: bool = False, stdin: bool = False, python_path: list = (),
                  on_exit: dict | None = None) -> dict:
    """Start argv under a supervisor on the agent's machine; the supervisor's first word on it. With stdin, the
    job reads what a follow of this agent sends it (job_input.py); else /dev/null. python_path: directories put
    first on the job's PYTHONPATH. on_exit: the hook the supervisor runs after the job (runs/on_exit.py)."""
    return agent.request("start", run_dir=run_dir, cwd=cwd, argv=argv, env=env, lock=lock, wait=wait, run_id=run_id,
                         laptop=socket.gethostname(), tree=tree, keep_tree=keep_tree, stdin=stdin,
                         python_path=list(python_path), on_exit=on_exit)


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another run holds it"
    since = time.strftime("%H:%M:%S", time.localtime(holder["since"])) if holder.get("since") else "?"
    who = f" from {holder['laptop']}" if holder.get("laptop") else ""
    return f"run {holder.get('run_id', '?')}{who} holds it since {since}"


def say_waiting(where: str, started: dict, run_id: str, queued: bool = False) -> None:
    place = started.get("place")
    line = f"place {place} in line" if place else "in line"
    if queued:
        say(f"queued run {run_id} on {where}: {line} ({describe_holder(started.get('holder'))})")
        return
    say(f"{where} is busy: {describe_holder(started.get('holder'))}; run {run_id} waits for it, {line} "
        "(Ctrl-C detaches; --no-wait gives up instead)")


def say_busy(where: str, started: dict) -> None:
    say(f"{where} is busy: {describe_holder(started.get('holder'))}; not waiting (--no-wait)")


def report_busy_gpus(compute_apps: list | None, host: str) -> None:
    """GPU processes on the host that no offload run started: they take memory and time from this one."""
    others = [app for app in compute_apps or [] if not app.get("offload_run")]
    if others:
        listed = ", ".join(f"pid {app['pid']} {app.get('name') or '?'} ({app.get('used_memory_mib') or '?'} MiB)"
                           for app in others)
        say(f"the GPUs of {host} are also busy with processes offload did not start: {listed}")
