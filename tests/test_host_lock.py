"""One job per GPU host: the host's lock, through real agents (two of them, like two laptops), real supervisors and
real jobs; and the processes nvidia-smi lists on a GPU, read from recorded real outputs (tests/data/nvidia-smi-apps,
sources in tests/data/README.md) since there is no GPU here."""
from __future__ import annotations

import ast
import getpass
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offload.runs import follow as stream
from offload.transport.agent import start_local
from remote_agent import facts, host_dirs, hostlock, supervisor, supervisor_error
from remote_agent.facts import parse_compute_apps
from conftest import fill_disk, small_disk_at
from procs import alive, processes_mentioning
from sshd_server import wait_for

RECORDED = Path(__file__).parent / "data" / "nvidia-smi-apps"
# Each job writes when it starts and ends to a timeline shared by all the runs of a test.
TIMED_JOB = ("import sys, time\n"
             "timeline, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])\n"
             "with open(timeline, 'a') as f: f.write(f'{name} start {time.time()}\\n')\n"
             "time.sleep(seconds)\n"
             "with open(timeline, 'a') as f: f.write(f'{name} end {time.time()}\\n')\n"
             "print(name, 'ran')\n")


@pytest.fixture
def laptops():
    """Two local agents on this one host, as two laptops would have; whatever a test asserted, every supervisor
    and job their runs started is killed by pid afterwards."""
    run_dirs = []
    agents = []
    try:
        for _ in range(2):
            agent = start_local()
            agent.run_dirs = run_dirs
            agents.append(agent)
        yield agents
    finally:
        for agent in agents:
            agent.close()
        for run_dir in run_dirs:
            kill_run(run_dir)


def kill_run(run_dir: Path) -> None:
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return
    for kill, target in ((os.kill, status.get("supervisor_pid")), (os.killpg, status.get("pgid"))):
        if target:
            try:
                kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A project directory on the host, with the lock where the laptop puts it: under the workdir."""
    (tmp_path / "project").mkdir()
    return tmp_path


def lock_of(host: Path) -> Path:
    return host / "workdir" / ".offload" / "gpu.lock"


def start(agent, host: Path, name: str, seconds: float, lock: bool = True, **fields) -> tuple:
    run_dir = host / "runs" / name
    agent.run_dirs.append(run_dir)
    started = agent.request("start", run_dir=str(run_dir), cwd=str(host / "project"), env={}, run_id=name,
                            argv=[sys.executable, "-c", TIMED_JOB, str(host / "timeline"), name, str(seconds)],
                            lock=str(lock_of(host)) if lock else None, **fields)
    return run_dir, started


def status_of(agent, run_dir: Path) -> dict:
    return agent.request("status", run_dir=str(run_dir))


def wait_exited(agent, *run_dirs: Path, timeout: float = 15) -> list:
    assert wait_for(lambda: all(status_of(agent, d)["state"] == "exited" for d in run_dirs), timeout)
    return [status_of(agent, d) for d in run_dirs]


def timeline(host: Path) -> dict:
    """{run: [start, end]} from what the jobs wrote (end missing for a job that was killed)."""
    times = {}
    path = host / "timeline"
    for line in (path.read_text().splitlines() if path.exists() else []):
        name, event, at = line.split()
        times.setdefault(name, {})[event] = float(at)
    return times


# --- the lock ----------------------------------------------------------------------------------------------

def test_a_second_run_waits_for_the_first_then_runs_after_it(laptops, host):
    agent = laptops[0]
    first_dir, first = start(agent, host, "run-a", 1.0)
    assert first["state"] == "running" and first["waited_s"] < 2
    second_dir, second = start(agent, host, "run-b", 0.1)
    assert second["state"] == "waiting"
    assert second["pid"] is None and second["pgid"] is None  # no job yet: nothing for a Ctrl-C to signal
    holder = second["holder"]
    assert (holder["run_id"], holder["run_dir"], holder["supervisor_pid"]) == \
        ("run-a", str(first_dir), first["supervisor_pid"])
    assert holder["user"] == getpass.getuser() and holder["since"] <= time.time()

    first, second = wait_exited(agent, first_dir, second_dir)
    assert first["exit_code"] == 0 and second["exit_code"] == 0
    times = timeline(host)
    assert times["run-a"]["end"] <= times["run-b"]["start"]
    assert second["waited_s"] >= 0.5
    # the last holder takes its note away just after it records its exit (durably: a directory sync later)
    assert wait_for(lambda: not Path(f"{lock_of(host)}.json").exists(), 5)


def test_runs_from_two_laptops_never_overlap_and_each_waiter_names_whom_it_waits_for(laptops, host):
    starts = [start(laptops[i % 2], host, f"run-{i}", 1.0 if i == 0 else 0.2, laptop=f"laptop-{i % 2}")
              for i in range(4)]
    assert [started["state"] for _, started in starts] == ["running", "waiting", "waiting", "waiting"]
    assert starts[1][1]["holder"]["run_id"] == "run-0" and starts[1][1]["holder"]["laptop"] == "laptop-0"

    finished = wait_exited(laptops[0], *(run_dir for run_dir, _ in starts))
    assert [status["exit_code"] for status in finished] == [0, 0, 0, 0]
    times = timeline(host)
    order = sorted(times, key=lambda name: times[name]["start"])
    for earlier, later in zip(order, order[1:]):
        assert times[earlier]["end"] <= times[later]["start"], (earlier, later, times)
    by_name = {f"run-{i}": status for i, status in enumerate(finished)}
    for earlier, later in zip(order, order[1:]):  # the last holder a waiter saw is the one it took over from
        assert by_name[later]["holder"]["run_id"] == earlier


def test_no_wait_on_a_busy_lock_is_busy_and_never_starts_the_job(laptops, host):
    holder_dir, _ = start(laptops[0], host, "run-a", 1.0)
    busy_dir, busy = start(laptops[1], host, "run-b", 0.1, wait=False)
    assert busy["state"] == "busy" and busy["holder"]["run_id"] == "run-a"
    assert busy["pid"] is None and busy["exit_code"] is None
    assert wait_for(lambda: not alive(busy["supervisor_pid"]), 5)

    wait_exited(laptops[0], holder_dir)
    assert status_of(laptops[1], busy_dir)["state"] == "busy"
    assert "run-b" not in timeline(host) and (busy_dir / "output.log").read_bytes() == b""
    free_dir, free = start(laptops[1], host, "run-c", 0.1, wait=False)
    assert free["state"] == "running"  # not waiting for a free lock is simply running
    wait_exited(laptops[1], free_dir)


class Collected:
    """A sink for offload.stream.follow that keeps what arrived."""

    def __init__(self):
        self.output = b""

    def write(self, data: bytes) -> None:
        self.output += data

    def metrics(self, data: bytes) -> None:
        pass


def test_following_a_waiting_run_streams_its_job_once_it_gets_the_gpu(laptops, host):
    start(laptops[0], host, "run-a", 0.5)
    waiting_dir, waiting = start(laptops[1], host, "run-b", 0.1)
    assert waiting["state"] == "waiting"
    sink = Collected()
    finished = stream.follow(laptops[1], str(waiting_dir), 0, sink)
    assert (finished["t"], finished["state"], finished["exit_code"]) == ("exit", "exited", 0)
    assert sink.output == b"run-b ran\n"


def test_following_a_busy_run_ends_at_once_with_the_holder(laptops, host):
    start(laptops[0], host, "run-a", 1.0)
    busy_dir, busy = start(laptops[1], host, "run-b", 0.1, wait=False)
    finished = stream.follow(laptops[1], str(busy_dir), 0, Collected())
    assert (finished["state"], finished["holder"]["run_id"]) == ("busy", "run-a")


def test_a_run_without_a_lock_does_not_wait(laptops, host):
    holder_dir, _ = start(laptops[0], host, "run-a", 1.0)
    local_dir, local = start(laptops[0], host, "local", 0.1, lock=False)
    assert local["state"] == "running"
    wait_exited(laptops[0], holder_dir, local_dir)
    assert timeline(host)["local"]["end"] < timeline(host)["run-a"]["end"]


def test_the_lock_of_a_killed_supervisor_is_taken_at_once(laptops, host):
    dead_dir, dead = start(laptops[0], host, "run-a", 300)
    os.kill(dead["supervisor_pid"], signal.SIGKILL)
    os.killpg(dead["pgid"], signal.SIGKILL)
    assert wait_for(lambda: not alive(dead["pid"]) and not alive(dead["supervisor_pid"]), 5)
    assert json.loads(Path(f"{lock_of(host)}.json").read_text())["run_id"] == "run-a"  # its note outlives it

    next_dir, taken = start(laptops[1], host, "run-b", 0.1)
    assert taken["state"] == "running" and taken["waited_s"] < 2  # the supervisor's own wait, not its start-up
    assert json.loads(Path(f"{lock_of(host)}.json").read_text())["run_id"] == "run-b"
    assert status_of(laptops[0], dead_dir)["state"] == "lost"
    wait_exited(laptops[1], next_dir)


def test_a_job_whose_supervisor_was_killed_keeps_the_gpu_until_it_ends(laptops, host):
    first_dir, first = start(laptops[0], host, "run-a", 3.0)
    os.kill(first["supervisor_pid"], signal.SIGKILL)
    assert wait_for(lambda: not alive(first["supervisor_pid"]), 5)
    assert alive(first["pid"]) and status_of(laptops[0], first_dir)["state"] == "lost"
    note = json.loads(Path(f"{lock_of(host)}.json").read_text())
    assert (note["run_id"], note["pgid"]) == ("run-a", first["pgid"])  # the note names the job, which lives on

    second_dir, second = start(laptops[1], host, "run-b", 0.1)
    assert second["state"] == "waiting"
    assert (second["holder"] or {}).get("run_id") == "run-a"  # believed: its supervisor is gone, its job is not
    (ran,) = wait_exited(laptops[1], second_dir)
    assert ran["exit_code"] == 0 and ran["holder"]["run_id"] == "run-a"
    times = timeline(host)
    assert times["run-a"]["end"] <= times["run-b"]["start"]  # the job itself ended first, unsupervised


@pytest.fixture
def small_disk(tmp_path: Path):
    with small_disk_at(tmp_path / "small-disk", "256k") as mount_point:
        yield mount_point


def test_a_supervisor_that_cannot_write_its_status_stops_its_job_and_says_why(laptops, host, small_disk):
    holder_dir, _ = start(laptops[0], host, "run-a", 1.0)
    run_dir = small_disk / "run-b"  # the waiting run's directory is on the small disk, its lock is not
    token = f"job-of-{run_dir}"
    started = laptops[1].request("start", run_dir=str(run_dir), cwd=str(host / "project"), env={}, run_id="run-b",
                                 argv=[sys.executable, "-c", "import time; time.sleep(300)", token],
                                 lock=str(lock_of(host)))
    try:
        assert started["state"] == "waiting"
        fill_disk(small_disk)  # then run-a ends: run-b takes the lock, starts its job, and cannot record it
        wait_exited(laptops[0], holder_dir)
        assert wait_for(lambda: status_of(laptops[1], run_dir)["state"] == "failed", 15), status_of(laptops[1], run_dir)
        error = status_of(laptops[1], run_dir)["error"]
        assert error == ("the supervisor failed: cannot record the run's status: No space left on device "
                         f"({run_dir / 'status.json'}); its job was stopped")
        assert wait_for(lambda: processes_mentioning(token) == [], 10)  # nothing runs on, locked or not
        free_dir, free = start(laptops[0], host, "run-c", 0.1, wait=False)
        assert free["state"] == "running"  # and the lock is free
        wait_exited(laptops[0], free_dir)
    finally:
        for pid in processes_mentioning(token):
            os.kill(pid, signal.SIGKILL)


def test_stopping_a_waiting_run_leaves_no_process_and_never_starts_it(laptops, host):
    holder_dir, _ = start(laptops[0], host, "run-a", 1.0)
    waiting_dir, waiting = start(laptops[1], host, "run-b", 0.1)
    assert waiting["state"] == "waiting"

    stopped = laptops[1].request("stop", run_dir=str(waiting_dir), grace=1)
    assert (stopped["state"], stopped["signalled"]) == ("exited", "SIGTERM")
    status = status_of(laptops[1], waiting_dir)
    assert status["signal"] == "SIGTERM" and status["exit_code"] is None and "waiting" in status["note"]
    assert wait_for(lambda: processes_mentioning(str(waiting_dir)) == [], 5)
    wait_exited(laptops[0], holder_dir)
    after_dir, _ = start(laptops[0], host, "run-c", 0.1)  # the free lock taken and given back once more:
    wait_exited(laptops[0], after_dir)  # a waiter that survived would have run by now, or still be waiting
    assert "run-b" not in timeline(host) and status_of(laptops[1], waiting_dir)["state"] == "exited"
    assert processes_mentioning(str(waiting_dir)) == []


def test_stopping_the_holder_lets_the_waiter_run(laptops, host):
    holder_dir, holder = start(laptops[0], host, "run-a", 300)
    waiting_dir, waiting = start(laptops[1], host, "run-b", 0.1)
    assert waiting["state"] == "waiting"
    assert laptops[0].request("stop", run_dir=str(holder_dir), grace=1)["signalled"] == "SIGTERM"
    stopped, ran = wait_exited(laptops[1], holder_dir, waiting_dir)
    assert stopped["signal"] == "SIGTERM" and ran["exit_code"] == 0
    assert ran["started_at"] >= stopped["ended_at"] and "end" not in timeline(host)["run-a"]


def test_a_lock_given_as_a_relative_path_is_under_the_project(laptops, host):
    run_dir = host / "runs" / "relative"
    laptops[0].run_dirs.append(run_dir)
    started = laptops[0].request("start", run_dir=str(run_dir), cwd=str(host / "project"), env={},
                                 argv=["true"], lock=".offload/gpu.lock")
    assert started["lock"] == str(host / "project" / ".offload" / "gpu.lock")
    assert json.loads((run_dir / "job.json").read_text())["run_id"] == "relative"  # from the run directory


def test_host_side_stays_python_38_and_standard_library_only():
    for module in (hostlock, supervisor, supervisor_error, host_dirs):
        tree = ast.parse(Path(module.__file__).read_text(), feature_version=(3, 8))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        assert imported <= set(sys.stdlib_module_names) | {"__future__"}, (module, imported)


# --- processes on the GPUs, from recorded real nvidia-smi outputs ------------------------------------------

def app(pid, name, mib):
    return {"pid": pid, "name": name, "used_memory_mib": mib}


RECORDED_APPS = {
    "vllm-engine-core-x2.csv": [app(3858903, "VLLM::EngineCore", 6265), app(3880364, "VLLM::EngineCore", 5530)],
    "python-4050mib.csv": [app(7575, "python", 4050)],
    "l40s-triton-x3.csv": [app(44378, "tritonserver", 1836),
                           app(44966, "/opt/tritonserver/backends/python/triton_python_backend_stub", 974),
                           app(52114, "/usr/bin/python3", 6294)],
    "ollama-llama-server-x3.csv": [app(905038, "/usr/bin/ptyxis", 29), app(906744, "/usr/bin/lact", 52),
                                   app(3643459, "/usr/local/lib/ollama/llama-server", 12110)],
    "windows-wddm.csv": [app(14900, "D:\\develop\\python3.14\\python.exe", None)],  # WDDM: no memory figure
    "windows-wddm-noheader.csv": [
        app(13276, "C:\\Program Files\\WindowsApps\\OpenAI.Codex_26.623.8305.0_x64__2p2nqsd0c76g0"
                   "\\app\\Codex.exe", None),
        app(11456, "C:\\Users\\Serhat\\AppData\\Local\\Programs\\Python\\Python313\\python.exe", None)],
    "h200-x8-gpu-uuid.csv": [app(1328667, "/usr/local/bin/python3.10", 130004),
                             app(1328668, "/usr/local/bin/python3.10", 130044), app(1425258, "python3", 105842),
                             app(1328669, "/usr/local/bin/python3.10", 129984), app(1425259, "python3", 105842),
                             app(1425260, "python3", 105842), app(1425261, "python3", 105842),
                             app(1758887, None, 58060)],  # [Not Found]: a process in another pid namespace
    "header-only.csv": [],
    "rtx-3090-llama-server.csv": [app(1106871, "/app/llama-server", 23342)],
}


@pytest.mark.parametrize("name", sorted(RECORDED_APPS))
def test_compute_apps_read_from_recorded_outputs(name):
    assert parse_compute_apps((RECORDED / name).read_text()) == RECORDED_APPS[name]


def test_compute_apps_without_a_header_read_in_the_order_asked_for():
    text = (RECORDED / "rtx-3090-llama-server-noheader-nounits.csv").read_text()
    assert parse_compute_apps(text, "timestamp,gpu_name,pid,process_name,used_memory") == \
        [app(1106871, "/app/llama-server", 23342)]
    assert parse_compute_apps(text) == []  # read as pid,process_name,used_memory, a timestamp is no pid


def test_a_process_name_with_commas_is_put_back_together():
    line = (RECORDED / "python-4050mib.csv").read_text().splitlines()[1].replace("python", "my,odd,name")
    assert parse_compute_apps(line) == [app(7575, "my,odd,name", 4050)]


def test_lines_that_are_not_processes_are_left_out():
    text = (RECORDED / "python-4050mib.csv").read_text()
    assert parse_compute_apps(text + "\nNo running processes found\n") == [app(7575, "python", 4050)]


@pytest.fixture
def recorded_nvidia_smi(tmp_path, monkeypatch):
    """An `nvidia-smi` on PATH that prints a recording, whatever it is asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat {RECORDED / 'windows-wddm-noheader.csv'}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_device_facts_list_the_processes_on_the_gpus(recorded_nvidia_smi):
    apps = facts.device_facts()["compute_apps"]
    assert [(a["pid"], a["used_memory_mib"]) for a in apps] == [(13276, None), (11456, None)]
    assert set(apps[0]) == {"pid", "name", "used_memory_mib", "offload_run"}


def test_no_nvidia_smi_means_no_compute_apps(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert facts.device_facts()["compute_apps"] is None


def test_a_process_offload_started_is_known_by_its_run_id():
    env = {k: v for k, v in os.environ.items() if k != "OFFLOAD_RUN_ID"}
    ours = subprocess.Popen(["sleep", "30"], env={**env, "OFFLOAD_RUN_ID": "20260101-120000-ab12"})
    theirs = subprocess.Popen(["sleep", "30"], env=env)
    try:
        assert facts.offload_run_of(ours.pid) == "20260101-120000-ab12"
        assert facts.offload_run_of(theirs.pid) is None
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait(timeout=5)
    assert facts.offload_run_of(ours.pid) is None  # gone
