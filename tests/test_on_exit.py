"""`on_exit:` (issue 15, point 4) against a real sshd: the host's supervisor runs it after the job, with the
right OFFLOAD_* variables for exit 0, exit 3 and SIGTERM; its output lands in the run's log; its failure never
changes the run's exit; hosts.yaml's serves where offload.yaml has none; the MFU comes from metrics.jsonl and the
job's peak."""
from __future__ import annotations

import pytest

from conftest import register_host, run_offload
from test_sync import host_project_dir

DUMP = 'env | grep "^OFFLOAD_[A-Z_]*=" | grep -v "^OFFLOAD_METRICS=" | sort > "on_exit-$OFFLOAD_RUN_ID.env"'
SCRIPTS = {
    "exit 0": ("print('iter 0: loss 4.5000, time 9.00ms, mfu 0.01%')\nprint('iter 1: loss 2.2500, time 9.00ms, mfu 0.01%')\n",
               "0", "", "2.25"),
    "exit 3": ("import sys\nprint('iter 0: loss 3.1250, time 9.00ms, mfu 0.01%')\nsys.exit(3)\n", "3", "", "3.125"),
    "SIGTERM": ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n", "", "SIGTERM", ""),
}


def hook_env(box: dict, project, run_id: str) -> dict:
    dumped = host_project_dir(box["workdir"], project) / f"on_exit-{run_id}.env"
    return dict(line.split("=", 1) for line in dumped.read_text().splitlines())


def last_run_id(project) -> str:
    return sorted(path.name for path in (project / ".offload" / "runs").iterdir())[-1]


@pytest.mark.parametrize("case", list(SCRIPTS), ids=list(SCRIPTS))
def test_on_exit_sees_how_the_run_ended(box, project, case):
    script, code, signal_name, loss = SCRIPTS[case]
    (project / "train.py").write_text(script)
    (project / "offload.yaml").write_text(f"on_exit: '{DUMP}'\n")
    result = run_offload("run", "train.py", cwd=project)
    assert "Traceback" not in result.stderr, result.stderr
    if code:
        assert result.returncode == int(code)
    run_id = last_run_id(project)
    env = hook_env(box, project, run_id)
    assert (env["OFFLOAD_RUN_ID"], env["OFFLOAD_EXIT_CODE"], env["OFFLOAD_SIGNAL"]) == (run_id, code, signal_name)
    assert env["OFFLOAD_FINAL_LOSS"] == loss and env["OFFLOAD_MFU"] == ""  # nanoGPT's mfu assumes an A100: not passed
    assert 0 <= float(env["OFFLOAD_WALL_S"]) < 60


def test_a_failing_hook_is_logged_and_leaves_the_exit_alone(box, project):
    (project / "offload.yaml").write_text("on_exit: 'echo hook says hi; exit 7'\n")
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 0, result.stderr
    log = (project / ".offload" / "runs" / last_run_id(project) / "output.log").read_text()
    assert "hook says hi" in log and "on_exit exited with code 7 (the run's own exit is as recorded)" in log
    assert run_offload("status", "last", cwd=project).stdout.rstrip().endswith("exited 0")


def test_the_hosts_hook_serves_where_the_project_has_none_and_mfu_comes_from_metrics(offload_home, sshd, project):
    box = register_host(offload_home, sshd, on_exit=DUMP, peak_tflops=1)
    (project / "train.py").write_text(
        "import offload_metrics\n"
        "for step in range(5):\n"
        "    offload_metrics.log_step(step, flops=2e11, seconds=1.0 if step >= 3 else 9.0, loss=2.0 - step / 10)\n")
    result = run_offload("run", "train.py", cwd=project)
    assert result.returncode == 0, result.stderr
    env = hook_env(box, project, last_run_id(project))
    assert env["OFFLOAD_FINAL_LOSS"] == "1.6"
    assert env["OFFLOAD_MFU"] == "0.2000"  # 2e11 FLOPs a second after the 3 warm-up steps, over 1 TFLOPS
