"""Start a job detached from the agent, follow its log, report and stop it.

The job runs under a supervisor process in a session of its own (see supervisor.py), which writes
output.log and status.json in the run directory. The agent only reads them, so the agent (and the SSH
link it lives on) can die at any moment without touching the job.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

from . import durable, host_dirs, logind, protocol, supervisor_error
from .protocol import RequestError, send_blob

STATUS = "status.json"
LOG = "output.log"
JOB = "job.json"
SUPERVISOR_STDERR = "supervisor-stderr.log"  # the supervisor's stderr (and systemd-run's): why one died before its job began;
#                                              its own one-line failure note is supervisor_error.py's supervisor.err
METRICS = "metrics.jsonl"  # written by the job itself (see lib/offload_metrics.py), when it wants to
LIB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")  # offload_metrics, importable by jobs
START_DEADLINE_S = 15.0
IDLE_TICK_S = 2.0  # while a job is quiet, a tick tells the laptop the link is alive
POLL_S = 0.05


def now() -> float:
    return round(time.time(), 3)


def write_json(path: str, data: dict) -> None:
    """status.json and job.json: a power cut leaves the last state whole, never an empty file."""
    durable.write_json_durably(path, data)


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
    env = job_env(checked_env(request.get("env", {})), run_dir)
    os.makedirs(run_dir)
    write_json(os.path.join(run_dir, JOB), {
        "argv": request["argv"], "cwd": cwd, "env": env, "lock": lock, "wait": bool(request.get("wait", True)),
        "run_id": request.get("run_id") or os.path.basename(run_dir), "laptop": request.get("laptop"),
        "tree": job_tree(request.get("tree"), cwd, tree_fd, bool(request.get("keep_tree"))),
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
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def job_env(env: dict, run_dir: str) -> dict:
    """The laptop's env for the job, plus where to write metrics and how to import offload_metrics."""
    python_path = [LIB_DIR] + [p for p in (env.get("PYTHONPATH") or os.environ.get("PYTHONPATH", "")).split(os.pathsep) if p]
    return {**env, "OFFLOAD_METRICS": os.path.join(run_dir, METRICS), "PYTHONPATH": os.pathsep.join(python_path)}


def signal_reaches(kill, target: int) -> bool:
    """Whether a process (os.kill) or process group (os.killpg) exists, by sending signal 0."""
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def alive(pid: int) -> bool:
    if not signal_reaches(os.kill, pid):
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_status(run_dir: str) -> dict:
    run_dir = host_dirs.absolute(run_dir, "a run directory")
    if not os.path.isdir(run_dir):
        raise RequestError("no_such_run", f"no run directory {run_dir} on the host")
    try:
        with open(os.path.join(run_dir, STATUS)) as f:
            status = json.load(f)
    except (FileNotFoundError, ValueError):
        status = {"state": "starting"}
    if status["state"] in ("running", "waiting") and not alive(status["supervisor_pid"]):
        status["state"] = "lost"  # the supervisor was killed: nobody will record an exit code
    if status["state"] not in ENDED_STATES:  # the supervisor failed before it could record an end
        error = supervisor_error.read(run_dir)
        if error is not None:
            status.update(state="failed", error=error)
    status["run_dir"] = run_dir
    return status


LIVE_STATES = ("starting", "waiting", "running")  # waiting: for the host's GPU lock (see supervisor.py)
ENDED_STATES = ("exited", "busy")  # recorded by the supervisor itself; "lost" and "failed" are inferred


def follow(run_dir: str, offset: int, send, out, metrics_offset: int = 0, until_now: bool = False) -> None:
    """Send the log from `offset` (and whole new metrics lines) as they grow, then the exit; with
    until_now, only what is there now, then an `eof` with the status. Returns early if the laptop speaks."""
    run_dir = host_dirs.absolute(run_dir, "a run directory")
    status = read_status(run_dir)
    last_sent = time.monotonic()
    with open(os.path.join(run_dir, LOG), "rb") as log:
        log.seek(offset)
        while True:
            metrics_offset += send_new_metrics(run_dir, metrics_offset, out)
            data = log.read(protocol.CHUNK)
            if data:
                send_blob(out, "output", offset, data)
                offset += len(data)
                last_sent = time.monotonic()
                continue
            if status["state"] not in LIVE_STATES:
                send("exit", **status, offset=offset, metrics_offset=metrics_offset)
                return
            if until_now:
                send("eof", **status, offset=offset, metrics_offset=metrics_offset)
                return
            if time.monotonic() - last_sent > IDLE_TICK_S:
                send("tick", offset=offset)
                last_sent = time.monotonic()
            if laptop_spoke(POLL_S):
                return
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


def laptop_spoke(timeout: float) -> bool:
    """True when the laptop sent something (or hung up) while we were following."""
    try:
        readable, _, _ = select.select([sys.stdin.fileno()], [], [], timeout)
    except (OSError, ValueError):
        time.sleep(timeout)
        return False
    return bool(readable)


def stop(run_dir: str, grace: float) -> dict:
    """SIGTERM to the job's whole process group, SIGKILL to what is left after `grace` seconds; of a lost run
    too, while its recorded group is still its job. A run still waiting for the GPU lock has no job yet: its
    supervisor takes SIGTERM as "give up" and records the exit."""
    status = read_status(run_dir)
    if status["state"] == "waiting":
        status = stop_waiting(run_dir, status)
        if status["state"] != "running":  # else it took the lock as we asked: stop its job as any other
            return {"state": status["state"], "signalled": "SIGTERM" if status["state"] == "exited" else None}
    orphaned = status["state"] == "lost" and bool(status.get("pgid")) and \
        run_group_alive(status["pgid"], status["run_dir"])  # its supervisor was killed, not its job
    if status["state"] != "running" and not orphaned:
        return {"state": status["state"], "signalled": None}
    pgid = status["pgid"]
    sent = "SIGTERM"
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return {"state": "exited", "signalled": None}
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(POLL_S)
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
        sent = "SIGKILL"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and read_status(run_dir)["state"] == "running":
        time.sleep(POLL_S)
    return {"state": read_status(run_dir)["state"], "signalled": sent}


def stop_waiting(run_dir: str, status: dict) -> dict:
    try:
        os.kill(status["supervisor_pid"], signal.SIGTERM)
    except ProcessLookupError:
        return {**status, "state": "lost"}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and status["state"] == "waiting":
        time.sleep(POLL_S)
        status = read_status(run_dir)
        if status["state"] == "waiting" and not alive(status["supervisor_pid"]):
            return {**status, "state": "lost"}
    return status


def group_alive(pgid: int) -> bool:
    return signal_reaches(os.killpg, pgid) and any(alive(pid) for pid in group_members(pgid))


def run_group_alive(pgid: int, run_dir: str) -> bool:
    """Whether the process group a run recorded still runs that run's job: a member lives whose environment
    names the run's metrics file (job_env), so a pgid the kernel has since given to others never counts."""
    if not signal_reaches(os.killpg, pgid):
        return False
    own_metrics = f"OFFLOAD_METRICS={os.path.join(run_dir, METRICS)}".encode()

    def runs_the_job(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return own_metrics in f.read().split(b"\0") and alive(pid)
        except OSError:
            return False

    # The leader (pid == pgid) first: waiters ask this often, and a scan of /proc is only for a leader gone.
    return runs_the_job(pgid) or any(runs_the_job(pid) for pid in group_members(pgid) if pid != pgid)


def group_members(pgid: int) -> list:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(name))
    return members
