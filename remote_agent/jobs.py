"""Start a job detached from the agent: its supervisor (supervisor.py) in a session of its own, outside the
user's login session where logind would end it at logout (logind.py).

What the job does then is in its run directory (run_status.py): following.py reads it as it grows, and
stopping.py ends the job.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from . import durable, host_dirs, job_stdin, logind
from .protocol import RequestError
from .run_status import JOB, METRICS, POLL_S, SUPERVISOR_STDERR, read_status

LIB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")  # offload_metrics, importable by jobs
START_DEADLINE_S = 15.0


def checked_on_exit(hook) -> dict | None:
    """{"command": shell text, "peak_tflops": number or None}, or None (see on_exit.py)."""
    if hook is None:
        return None
    if not isinstance(hook, dict) or not isinstance(hook.get("command"), str) or "\0" in hook["command"]:
        raise RequestError("bad_request", f"on_exit must be a shell command, not {hook!r}")
    peak = hook.get("peak_tflops")
    if peak is not None and (isinstance(peak, bool) or not isinstance(peak, (int, float)) or peak <= 0):
        peak = None
    return {"command": hook["command"], "peak_tflops": peak}


def start(request: dict, tree_fd: int | None = None) -> dict:
    """Start the job's supervisor. With `tree` in the request the job runs in a synced project tree it owns
    for its whole life (tree.py): tree_fd is the tree lock the sync took for it, passed on to the
    supervisor; without one, the supervisor takes the lock itself and switches in the run's staged tree."""
    run_dir = host_dirs.absolute(request["run_dir"], "a run directory")
    cwd = host_dirs.absolute(request["cwd"], "a job's working directory")
    if not os.path.isdir(cwd):
        raise RequestError("bad_request", f"project directory {cwd} does not exist on the host")
    lock = request.get("lock")  # the host's GPU lock (see hostlock.py); None: run at once, as local runs do
    if lock is not None:
        if not isinstance(lock, str) or not lock:
            raise RequestError("bad_request", f"lock must be a path on the host, not {lock!r}")
        lock = os.path.abspath(os.path.join(cwd, os.path.expanduser(lock)))
    env = job_env(checked_env(request.get("env", {})), run_dir, checked_python_path(request.get("python_path", [])))
    os.makedirs(run_dir)
    if request.get("stdin"):  # followed: the laptop's stdin reaches the job through this agent (job_stdin.py)
        job_stdin.create(run_dir)
    durable.write_json_durably(os.path.join(run_dir, JOB), {  # a power cut leaves it whole, never empty
        "argv": request["argv"], "cwd": cwd, "env": env, "lock": lock, "wait": bool(request.get("wait", True)),
        "stdin": bool(request.get("stdin")),
        "run_id": request.get("run_id") or os.path.basename(run_dir), "laptop": request.get("laptop"),
        "tree": job_tree(request.get("tree"), cwd, tree_fd, bool(request.get("keep_tree"))),
        "on_exit": checked_on_exit(request.get("on_exit")),
    })
    agent_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    plan, scope_prefix = logind.plan_survival(logind.read_facts())  # where logind would end it at logout: a scope
    with open(os.path.join(run_dir, SUPERVISOR_STDERR), "ab") as errors:
        supervisor = subprocess.Popen(
            supervisor_argv(run_dir, scope_prefix if plan == "scope" else []),
            cwd=agent_root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
            start_new_session=True, close_fds=True,  # its own session: a hangup on the link never reaches it
            pass_fds=(tree_fd,) if tree_fd is not None and request.get("tree") is not None else (),
            env=logind.user_bus_env() if plan == "scope" else None,  # where systemd-run finds the user's manager
        )
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        gone = supervisor.poll() is not None  # before the status: one written just before it exited is seen
        status = read_status(run_dir)
        if status["state"] != "starting":
            return status
        if gone:
            raise RequestError("spawn_failed", f"the job's supervisor exited with code {supervisor.returncode} before "
                                               f"the job started: {last_error_line(run_dir)}")
        time.sleep(POLL_S)
    raise RequestError("spawn_failed", f"the job did not start within {START_DEADLINE_S:.0f} s (see {run_dir})")


def checked_env(env) -> dict:
    """The job's env from the laptop, refused here, in one line, where execve(2) would refuse it in the supervisor."""
    if not isinstance(env, dict):
        raise RequestError("bad_request", f"env must be a mapping of names to strings, not {env!r}")
    for name, value in env.items():
        if not (isinstance(name, str) and isinstance(value, str)) or not name or "=" in name or "\0" in name + value:
            raise RequestError("bad_request", f"env {name!r} cannot reach a job: a name is text without '=' or NUL, "
                                              "and its value (not shown: it may be a token) a string without NUL")
    return env


def last_error_line(run_dir: str) -> str:
    path = os.path.join(run_dir, SUPERVISOR_STDERR)
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        lines = []
    return f"{lines[-1]} (see {path})" if lines else f"it said nothing (see {run_dir})"


def supervisor_argv(run_dir: str, launcher: list) -> list:
    """The supervisor's command, behind `launcher` (logind.SCOPE_PREFIX, or nothing): systemd-run execs it in
    place, so it keeps its pid, its new session and the tree lock's inherited fd."""
    return [*launcher, sys.executable, "-m", "remote_agent.supervisor", run_dir]


def job_tree(tree: dict | None, cwd: str, tree_fd: int | None, keep: bool) -> dict | None:
    """What job.json says of the project tree the job runs in: the tree lock's inherited fd (if the sync
    holds it), the staged tree to switch in (if it made one), and whether the stage is used up by this job."""
    if tree is None:
        return None
    if not isinstance(tree, dict) or not isinstance(tree.get("stage"), (str, type(None))):
        raise RequestError("bad_request", f"tree must be {{'stage': ID or null}}, not {tree!r}")
    return {"project_dir": cwd, "fd": tree_fd, "stage": tree.get("stage"), "consume": not keep}


def free_port() -> int:
    """A TCP port nothing listens on now, on every address of this host (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def checked_python_path(python_path) -> list:
    """The directories the laptop puts first on the job's PYTHONPATH (the synced project's root), ~ expanded."""
    if not isinstance(python_path, list):
        raise RequestError("bad_request", f"python_path must be a list of directories on the host, not {python_path!r}")
    return [host_dirs.absolute(path, "a python_path directory") for path in python_path]


def job_env(env: dict, run_dir: str, first: list = ()) -> dict:
    """The laptop's env for the job, plus where to write metrics and how to import offload_metrics. `first` leads
    the PYTHONPATH (the project's root, so its own packages import from a script anywhere in it, as with
    `python -m` or an editable install); the host's own PYTHONPATH (hosts.yaml's env, else the agent's) follows."""
    own = [p for p in (env.get("PYTHONPATH") or os.environ.get("PYTHONPATH", "")).split(os.pathsep) if p]
    python_path = [*first, LIB_DIR, *own]
    return {**env, "OFFLOAD_METRICS": os.path.join(run_dir, METRICS), "PYTHONPATH": os.pathsep.join(python_path)}
