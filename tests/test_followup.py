"""Runs that outlive the laptop: --detach, status, logs, stop, run references, Ctrl-C's question."""
from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import register_host, run_offload, start_offload
from procs import alive, descendants, group_members
from terminal import read_terminal
from offload.runs.record import load_runs
from sshd_server import wait_for

SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(300)\n"
# torchrun's workers, each with a child of its own: every one of them must go when the run is stopped
WORKERS = ("import os, subprocess, time\n"
           "subprocess.Popen(['sleep', '300'])\n"
           "print('worker', os.environ['RANK'], 'up', flush=True)\n"
           "time.sleep(300)\n")


def host_status(meta: dict) -> dict:
    return json.loads((Path(meta["run_dir"]) / "status.json").read_text())


def test_detach_returns_once_started_and_status_logs_follow(box, project, tmp_path):
    go = tmp_path / "go"  # the job ends only when the test says so: detach must return while it runs
    (project / "sleeper.py").write_text("import os, time\nprint('up', flush=True)\n"
                                        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\nprint('done')\n")
    try:
        detached = run_offload("run", "--detach", "sleeper.py", cwd=project, timeout=60)
        assert detached.returncode == 0, detached.stderr
        (meta,) = load_runs(project)
        assert f"offload logs {meta['run_id']} -f" in detached.stderr and meta["detached"] is True
        assert "warning" not in detached.stderr  # nothing here ends a run at logout (see test_logout_survival)
        status = run_offload("status", meta["run_id"][:-2], cwd=project)  # a unique prefix names it
        assert status.returncode == 0 and f"{meta['run_id']} on box: running (pid" in status.stdout
    finally:
        go.touch()
    followed = run_offload("logs", "last", "-f", cwd=project)
    assert followed.stdout == "up\ndone\n"
    assert (project / ".offload" / "runs" / meta["run_id"] / "output.log").read_text() == "up\ndone\n"
    assert run_offload("status", cwd=project).stdout.strip().endswith("exited 0")
    assert load_runs(project)[0]["exit_code"] == 0
    again = run_offload("logs", "last", cwd=project)  # nothing new: the laptop's copy, once
    assert again.stdout == "up\ndone\n"


def test_stop_leaves_no_process_of_the_run_alive(offload_home, sshd, project):
    register_host(offload_home, sshd, gpus=2)  # torchrun, two workers, each with a child
    (project / "workers.py").write_text(WORKERS)
    assert run_offload("run", "--detach", "workers.py", cwd=project).returncode == 0
    (meta,) = load_runs(project)
    assert wait_for(lambda: (Path(meta["run_dir"]) / "output.log").read_text().count("up") == 2, 60)
    status = host_status(meta)
    everyone = [status["pid"], *descendants(status["pid"])]
    assert len(everyone) >= 5  # torchrun, 2 workers, 2 sleeps
    stopped = run_offload("stop", "last", "--grace", "5", cwd=project)
    assert stopped.returncode == 0, stopped.stderr
    assert "process group on box" in stopped.stderr
    assert wait_for(lambda: not any(alive(pid) for pid in everyone) and not group_members(status["pgid"]), 10), \
        [pid for pid in everyone if alive(pid)]
    # torchrun turns SIGTERM into a clean shutdown of its workers and exits 1
    assert run_offload("status", "last", cwd=project).stdout.strip().endswith(("exited 1", "killed by SIGTERM"))


def test_stop_of_a_finished_run_says_so(box, project):
    assert run_offload("run", "report.py", cwd=project).returncode == 0
    stopped = run_offload("stop", "last", cwd=project)
    assert stopped.returncode == 0 and "was not running" in stopped.stderr


def test_run_references_are_ids_unique_prefixes_or_last(box, project):
    for _ in range(2):
        assert run_offload("run", "report.py", cwd=project).returncode == 0
    first, second = load_runs(project)
    common = os.path.commonprefix([first["run_id"], second["run_id"]])
    ambiguous = run_offload("status", common, cwd=project)
    assert ambiguous.returncode == 1 and "names 2 runs" in ambiguous.stderr
    unknown = run_offload("status", "nope", cwd=project)
    assert unknown.returncode == 1 and "no run 'nope'" in unknown.stderr
    assert run_offload("status", first["run_id"], cwd=project).stdout.startswith(first["run_id"])
    assert run_offload("status", "last", cwd=project).stdout.startswith(second["run_id"])


def test_ctrl_c_in_a_terminal_asks_and_y_stops_the_run(box, project):
    import pty

    (project / "sleeper.py").write_text(SLEEPER)
    leader, follower = pty.openpty()
    proc = start_offload("run", "sleeper.py", cwd=project, stdin=follower, stdout=follower, stderr=follower,
                         start_new_session=True)
    os.close(follower)
    try:
        seen = read_terminal(leader, 60, until=b"up")
        os.killpg(proc.pid, 2)  # Ctrl-C, as the terminal sends it
        seen = read_terminal(leader, 30, seen, until=b"[y/N]")
        os.write(leader, b"y\n")
        assert proc.wait(timeout=30) == 130
        seen = read_terminal(leader, 30, seen)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(leader)
    assert b"stop the run on box too? [y/N]" in seen and b"process group on box" in seen
    (meta,) = load_runs(project)
    assert wait_for(lambda: host_status(meta)["state"] == "exited", 10)
    assert host_status(meta)["signal"] == "SIGTERM"


COUNTER = ("import os\n"  # resumes from out/count.txt like nanoGPT from out/ckpt.pt
           "os.makedirs('out', exist_ok=True)\n"
           "count = int(open('out/count.txt').read()) if os.path.exists('out/count.txt') else 0\n"
           "open('out/count.txt', 'w').write(str(count + 1))\n"
           "print('count', count + 1, 'at', os.getcwd())\n")


def test_run_fetch_brings_files_back_when_the_run_ends(box, project):
    (project / "counter.py").write_text(COUNTER)
    result = run_offload("run", "--fetch", "out/*.txt", "counter.py", cwd=project)
    assert result.returncode == 0, result.stderr
    (meta,) = load_runs(project)
    fetched = project / ".offload" / "runs" / meta["run_id"] / "files" / "out" / "count.txt"
    assert fetched.read_text() == "1"
    assert "fetch: 1 file" in result.stderr


def test_resume_moves_a_fallback_run_to_the_host_when_it_is_back(offload_home, sshd, project):
    from sshd_server import closed_port

    (project / ".gitignore").write_text("out/\n")  # outputs never travel with the sync
    (project / "counter.py").write_text(COUNTER)
    register_host(offload_home, sshd, port=closed_port())  # the GPU box is off
    local = run_offload("run", "counter.py", cwd=project)
    assert local.returncode == 0 and "running locally" in local.stderr
    assert (project / "out" / "count.txt").read_text() == "1"
    register_host(offload_home, sshd)  # the box is back
    resumed = run_offload("run", "--resume", "last", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert "count 2 at" in resumed.stdout  # it went on from the fallback run's output
    first, second = load_runs(project)
    assert first["host"] == "local" and second["host"] == "box"
    assert Path(second["project_dir"], "out", "count.txt").read_text() == "2"
    assert second["script"] == "counter.py"
    # the put-back file is the run's: a later sync does not delete it although it is not in the project
    assert run_offload("sync", cwd=project).returncode == 0
    assert Path(second["project_dir"], "out", "count.txt").exists()


def test_resume_of_a_remote_run_needs_its_files_fetched_first(box, project):
    (project / "counter.py").write_text(COUNTER)
    assert run_offload("run", "counter.py", cwd=project).returncode == 0
    refused = run_offload("run", "--resume", "last", cwd=project)
    assert refused.returncode == 1 and "offload fetch" in refused.stderr
    assert run_offload("fetch", "last", cwd=project).returncode == 0
    Path(load_runs(project)[0]["project_dir"], "out", "count.txt").unlink()  # as if resuming on another box
    resumed = run_offload("run", "--resume", load_runs(project)[0]["run_id"], cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert "count 2 at" in resumed.stdout


SPAN = ("import os, sys, time\n"  # records when it held the host; holds it until the test lets go
        "start = time.time(); deadline = start + 60\n"
        "while not os.path.exists(sys.argv[2]) and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "open(sys.argv[1], 'a').write(f'{start} {time.time()}\\n')\n")


def host_state(meta: dict) -> str | None:
    status_file = Path(meta["run_dir"]) / "status.json"
    try:
        return json.loads(status_file.read_text())["state"]
    except (OSError, ValueError):
        return None


def test_two_runs_on_one_host_never_overlap(box, project, tmp_path):
    (project / "span.py").write_text(SPAN)
    spans, release = tmp_path / "spans.txt", tmp_path / "release"
    first = start_offload("run", "span.py", str(spans), str(release), cwd=project)
    second = None
    try:
        assert wait_for(lambda: len(load_runs(project)) == 1 and host_state(load_runs(project)[0]) == "running", 30)
        second = start_offload("run", "span.py", str(spans), str(release), cwd=project)
        assert wait_for(lambda: len(load_runs(project)) == 2 and host_state(load_runs(project)[1]) == "waiting", 30)
        release.touch()  # the first ends; only then may the second start
        assert first.wait(timeout=60) == 0
        second_err = second.communicate(timeout=60)[1].decode(errors="replace")
    finally:
        release.touch()
        for process in (first, second):
            if process is not None:
                process.kill()
                process.wait(timeout=10)
    assert second.returncode == 0, second_err
    first_id = load_runs(project)[0]["run_id"]
    assert f"box is busy: run {first_id}" in second_err and "waits for it" in second_err
    (a_start, a_end), (b_start, b_end) = sorted(tuple(map(float, line.split())) for line in spans.read_text().splitlines())
    assert a_end <= b_start  # the second started only after the first had finished


def test_no_wait_on_a_busy_host_exits_75_without_running(box, project, tmp_path):
    (project / "sleeper.py").write_text(SLEEPER)
    assert run_offload("run", "--detach", "sleeper.py", cwd=project).returncode == 0
    holder = load_runs(project)[0]["run_id"]
    try:
        busy = run_offload("run", "--no-wait", "report.py", cwd=project)
        assert busy.returncode == 75
        assert f"box is busy: run {holder}" in busy.stderr and "not waiting" in busy.stderr
        assert busy.stdout == ""  # report.py never ran
    finally:
        assert run_offload("stop", holder, "--grace", "1", cwd=project).returncode == 0
    assert run_offload("run", "--no-wait", "report.py", cwd=project).returncode == 0  # free again


def test_gpu_processes_offload_did_not_start_are_reported(capsys):
    from offload.runs.start import report_busy_gpus
    from remote_agent.facts import parse_compute_apps

    recorded = (Path(__file__).parent / "data" / "nvidia-smi-apps" / "python-4050mib.csv").read_text()
    (app,) = parse_compute_apps(recorded)
    report_busy_gpus([{**app, "offload_run": None}, {**app, "pid": 1, "offload_run": "20261122-1"}], "box")
    err = capsys.readouterr().err
    assert "busy with processes offload did not start: pid 7575 python (4050 MiB)" in err
    assert "pid 1 " not in err  # a process of an offload run is not a stranger
    report_busy_gpus([], "box")
    assert capsys.readouterr().err == ""
