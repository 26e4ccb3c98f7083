"""How a run ends, wherever it is watched: followed, followed again with `logs`, stopped at the Ctrl-C prompt,
with `offload stop`, or while it waited for the host; and `runs`, `status` and `stop` telling one story of it."""
from __future__ import annotations

import json
import os
import pty
import signal
import time
from pathlib import Path

import pytest

from conftest import HOLD, run_offload, start_offload
from offload.runs.record import load_runs
from sshd_server import wait_for
from terminal import read_terminal
from test_mfu_runs import NANOGPT_STYLE

FIGURES = ("mfu", "mfu_source", "achieved_tflops", "time_per_iter_s", "tokens_per_s", "final_loss", "iterations",
           "total_flops", "peak_tflops", "dtype")
# Stops cleanly on SIGTERM, saying so, with an exit code of its own.
TRAPPER = ("import signal, sys, time\n"
           "def on_term(signum, frame):\n"
           "    print('caught SIGTERM: saving a checkpoint', flush=True)\n"
           "    time.sleep(0.3)\n"
           "    print('saved', flush=True)\n"
           "    sys.exit(3)\n"
           "signal.signal(signal.SIGTERM, on_term)\n"
           "print('up', flush=True)\n"
           "time.sleep(300)\n")


def host_status(meta: dict) -> dict:
    return json.loads((Path(meta["run_dir"]) / "status.json").read_text())


def summary_lines(stderr: str) -> list:
    """The summary's rows and the hints, but wall time (the reference run's own is another)."""
    labels = ("device", "precision", "peak TFLOPS", "achieved TFLOPS", "MFU", "time per iteration", "tokens/s", "hint:")
    return [line.strip() for line in stderr.splitlines()
            if line.strip().startswith(labels) or line.startswith("offload: hint:")]


def runs_row(project: Path, run_id: str) -> str:
    listing = run_offload("runs", cwd=project)
    assert listing.returncode == 0, listing.stderr
    (row,) = [line for line in listing.stdout.splitlines() if run_id in line]
    return row


def runs_exit(project: Path, run_id: str) -> str:
    """The `exit` cell of the run's row in `offload runs` (found under its column's heading)."""
    listing = run_offload("runs", cwd=project, env={"COLUMNS": "400"})
    assert listing.returncode == 0, listing.stderr
    header = listing.stdout.splitlines()[0]
    (row,) = [line for line in listing.stdout.splitlines() if run_id in line]
    start = header.index(" exit ") + 1
    return row[start:].split()[0]


def test_a_detached_run_followed_again_ends_with_the_summary_and_the_hosts_end_time(box, project):
    (project / "nano.py").write_text(NANOGPT_STYLE)
    followed = run_offload("run", "nano.py", cwd=project)  # the reference: followed from its start to its end
    assert followed.returncode == 0, followed.stderr
    assert run_offload("run", "--detach", "nano.py", cwd=project).returncode == 0
    reference, detached = load_runs(project)
    assert wait_for(lambda: host_status(detached)["state"] == "exited", 30)
    time.sleep(2.0)  # the laptop notices well after the job ended
    again = run_offload("logs", "last", "-f", cwd=project)
    assert again.returncode == 0, again.stderr
    meta = load_runs(project)[-1]
    assert {key: meta[key] for key in FIGURES} == pytest.approx({key: reference[key] for key in FIGURES})
    assert meta["iterations"] and meta["final_loss"] == pytest.approx(2.9)
    assert summary_lines(again.stderr) == summary_lines(followed.stderr) and "MFU" in again.stderr
    assert "wall time" in again.stderr
    host = host_status(meta)  # the end is the host's, not when `logs` noticed it
    assert meta["ended_unix"] == host["ended_at"]
    assert meta["duration_s"] == round(host["ended_at"] - host["queued_at"], 1) and meta["duration_s"] < 2.0
    row = runs_row(project, meta["run_id"])
    assert " 2.9000 " in row and not row.rstrip().endswith("n/a")


def test_a_run_detached_at_ctrl_c_and_followed_again_ends_with_the_summary(box, project, tmp_path):
    go = tmp_path / "go"  # the run ends only once the laptop has detached
    (project / "nano.py").write_text(NANOGPT_STYLE + HOLD.replace("import os, sys, time\n", "import os\n"))
    code, shown = ctrl_c_and_answer(project, ["nano.py", str(go)], b"iter 11", b"n\n")
    assert code == 130 and "detached: run" in shown, shown
    go.touch()
    again = run_offload("logs", "last", "-f", cwd=project)
    assert again.returncode == 0, again.stderr
    (meta,) = load_runs(project)
    assert meta["iterations"] and meta["final_loss"] == pytest.approx(2.9) and meta["mfu_source"] == "log"
    assert "time per iteration" in again.stderr and "20.0 ms" in again.stderr and "wall time" in again.stderr
    assert meta["ended_unix"] == host_status(meta)["ended_at"]


def test_status_records_the_hosts_end_time_not_when_it_was_typed(box, project):
    (project / "quick.py").write_text("print('done')\n")
    assert run_offload("run", "--detach", "quick.py", cwd=project).returncode == 0
    (meta,) = load_runs(project)
    assert wait_for(lambda: host_status(meta)["state"] == "exited", 30)
    time.sleep(2.5)
    assert run_offload("status", "last", cwd=project).stdout.strip().endswith("exited 0")
    (meta,) = load_runs(project)
    host = host_status(meta)
    assert meta["ended_unix"] == host["ended_at"] and meta["duration_s"] < 2.0
    assert time.mktime(time.strptime(meta["ended_at"], "%Y-%m-%dT%H:%M:%S%z")) == int(host["ended_at"])


def test_a_run_with_no_iteration_lines_ends_without_an_mfu_line(box, project):
    followed = run_offload("run", "report.py", cwd=project)
    assert followed.returncode == 0, followed.stderr
    again = run_offload("logs", "last", "-f", cwd=project)
    assert again.returncode == 0, again.stderr
    for result in (followed, again):
        assert "MFU" not in result.stderr and "n/a" not in result.stderr, result.stderr
    assert load_runs(project)[0]["mfu_reason"]  # the why stays in meta.json


def ctrl_c_and_answer(project: Path, args: list, ready: bytes, answer: bytes) -> tuple:
    """`offload run ARGS` on a pty: Ctrl-C once `ready` shows, `answer` at the stop prompt; (exit code, shown)."""
    leader, follower = pty.openpty()
    proc = start_offload("run", *args, cwd=project, stdin=follower, stdout=follower, stderr=follower,
                         start_new_session=True)
    os.close(follower)
    try:
        seen = read_terminal(leader, 60, until=ready)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the terminal sends it
        seen = read_terminal(leader, 30, seen, until=b"[y/N]")
        os.write(leader, answer)
        code = proc.wait(timeout=60)
        return code, read_terminal(leader, 30, seen).decode(errors="replace")
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(leader)


def test_after_y_at_the_stop_prompt_the_scripts_last_words_and_exit_code_are_its_own(box, project):
    (project / "trapper.py").write_text(TRAPPER)
    code, shown = ctrl_c_and_answer(project, ["trapper.py"], b"up", b"y\n")
    assert code == 3, shown
    assert "caught SIGTERM: saving a checkpoint" in shown and "saved" in shown
    (meta,) = load_runs(project)
    log = (project / ".offload" / "runs" / meta["run_id"] / "output.log").read_text()
    assert log == "up\ncaught SIGTERM: saving a checkpoint\nsaved\n"
    assert meta["exit_code"] == 3 and meta["ended_unix"] == host_status(meta)["ended_at"]
    assert runs_exit(project, meta["run_id"]) == "3"  # not `running?` forever
    assert run_offload("status", "last", cwd=project).stdout.strip().endswith("exited 3")
    stopped = run_offload("stop", "last", cwd=project)
    assert stopped.returncode == 0 and "was not running (exited 3)" in stopped.stderr


def test_a_run_killed_by_the_stop_it_was_asked_for_reads_so_everywhere(box, project):
    (project / "sleeper.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(300)\n")
    code, shown = ctrl_c_and_answer(project, ["sleeper.py"], b"up", b"y\n")
    assert code == 130, shown
    (meta,) = load_runs(project)
    assert meta["signal"] == "SIGTERM" and meta["exit_code"] == 128 + 15
    assert runs_exit(project, meta["run_id"]) == "SIGTERM"
    assert run_offload("status", "last", cwd=project).stdout.strip().endswith("killed by SIGTERM")
    assert "was not running (killed by SIGTERM)" in run_offload("stop", "last", cwd=project).stderr


def test_a_run_ended_with_offload_stop_reads_so_everywhere(box, project):
    (project / "sleeper.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(300)\n")
    assert run_offload("run", "--detach", "sleeper.py", cwd=project).returncode == 0
    (meta,) = load_runs(project)
    assert wait_for(lambda: "up" in (Path(meta["run_dir"]) / "output.log").read_text(), 30)
    stopped = run_offload("stop", "last", "--grace", "2", cwd=project)
    assert stopped.returncode == 0 and "process group on box" in stopped.stderr, stopped.stderr
    (meta,) = load_runs(project)
    assert meta["signal"] == "SIGTERM" and meta["ended_unix"] == host_status(meta)["ended_at"]
    assert runs_exit(project, meta["run_id"]) == "SIGTERM"
    assert run_offload("status", "last", cwd=project).stdout.strip().endswith("killed by SIGTERM")
    assert "was not running (killed by SIGTERM)" in run_offload("stop", "last", cwd=project).stderr


def test_runs_stopped_while_waiting_for_the_host_read_so_in_runs_status_and_stop(box, project, tmp_path):
    go = tmp_path / "go"
    (project / "hold.py").write_text(HOLD)
    assert run_offload("run", "--detach", "hold.py", str(go), cwd=project).returncode == 0
    try:
        waiting = run_offload("run", "--detach", "report.py", cwd=project)  # waits for the holder, detached
        assert waiting.returncode == 0 and "waits for it" in waiting.stderr, waiting.stderr
        by_command = load_runs(project)[-1]["run_id"]
        stopped = run_offload("stop", by_command, cwd=project)
        assert stopped.returncode == 0 and "stopped while waiting" in stopped.stderr, stopped.stderr
        code, shown = ctrl_c_and_answer(project, ["report.py"], b"waits for it", b"y\n")  # followed, then Ctrl-C, y
        assert code == 130 and "stopped while waiting" in shown, shown
        by_prompt = load_runs(project)[-1]["run_id"]
    finally:
        go.touch()
    for run_id in (by_command, by_prompt):
        assert "stopped while waiting" in runs_row(project, run_id)
        status = run_offload("status", run_id, cwd=project)
        assert status.stdout.strip() == f"{run_id} on box: stopped while waiting for the host's GPU (it never started)"
        again = run_offload("stop", run_id, cwd=project)
        assert "stopped while waiting" in again.stderr and "killed" not in again.stderr, again.stderr
        assert load_runs(project)[[m["run_id"] for m in load_runs(project)].index(run_id)]["stopped_waiting"] is True
