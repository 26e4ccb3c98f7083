"""No silent traps in `offload run`: offload's own options written after SCRIPT (still the script's, said in one
line with the fix), and several processes on a host with no GPU (said before the launch)."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import register_host, run_offload
from offload.runs.launch import cpu_processes_warning
from remote_agent.facts import parse_nvidia_smi_csv


def report_of(result) -> dict:
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def warnings_in(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "after report.py" in line]


def test_a_trailing_detach_still_reaches_the_script_with_one_warning(offload_home, sshd, project):
    register_host(offload_home, sshd)
    result = run_offload("run", "--no-fallback", "report.py", "--lr=3", "--detach", cwd=project)
    assert result.returncode == 0, result.stderr
    assert report_of(result)["argv"] == ["--lr=3", "--detach"]  # followed to the end: offload did not detach
    (line,) = warnings_in(result.stderr)
    assert line == ("offload: --detach after report.py goes to the script, not to offload (everything after SCRIPT "
                    "is the script's); for offload, put it before SCRIPT: "
                    "offload run --no-fallback --detach report.py --lr=3")


def test_trailing_options_with_values_are_moved_with_them(offload_home, sshd, project):
    register_host(offload_home, sshd)
    result = run_offload("run", "report.py", "-H", "box", "x", "--fetch=out/*", cwd=project)
    assert result.returncode == 0, result.stderr
    assert report_of(result)["argv"] == ["-H", "box", "x", "--fetch=out/*"]
    (line,) = warnings_in(result.stderr)
    assert line.startswith("offload: -H, --fetch=out/* after report.py go to the script, not to offload")
    assert line.endswith("put them before SCRIPT: offload run -H box '--fetch=out/*' report.py x")


def test_other_arguments_and_those_after_a_double_dash_say_nothing(offload_home, sshd, project):
    register_host(offload_home, sshd)
    args = ["--device=cpu", "-x", "--hostname", "a", "--", "--detach"]  # after `--`, nothing is offload's
    result = run_offload("run", "report.py", *args, cwd=project)
    assert result.returncode == 0, result.stderr
    assert report_of(result)["argv"] == args
    assert warnings_in(result.stderr) == [] and "not to offload" not in result.stderr


def test_several_processes_on_a_host_with_no_gpu_are_warned_of_before_the_launch(offload_home, sshd, project):
    register_host(offload_home, sshd)  # this machine: no GPU
    (project / "rank.py").write_text("import os\nos.write(1, f\"rank {os.environ['RANK']}\\n\".encode())\n")
    result = run_offload("run", "--nproc-per-node", "2", "rank.py", cwd=project)
    assert result.returncode == 0, result.stderr
    warning = ("offload: box has no GPU: torchrun will run 2 processes on its CPU, and a script hard-wired to CUDA "
               "(`.cuda()`, device='cuda', backend='nccl') fails there")
    lines = result.stderr.splitlines()
    assert lines.count(warning) == 1
    started = next(i for i, line in enumerate(lines) if line.startswith("offload: run ") and " started on " in line)
    assert lines.index(warning) < started  # before the launch, not after the failure
    assert sorted(line for line in result.stdout.splitlines() if line.startswith("rank")) == ["rank 0", "rank 1"]


def test_one_process_on_a_host_with_no_gpu_is_not_warned_of(offload_home, sshd, project):
    register_host(offload_home, sshd)
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "has no GPU" not in result.stderr


def test_several_processes_on_a_host_with_gpus_are_not_warned_of():
    """The GPU itself is the one stand-in: a recorded real nvidia-smi of a two-GPU box."""
    gpus = parse_nvidia_smi_csv((Path(__file__).parent / "data" / "nvidia-smi" / "rtx-3090-x2.csv").read_text())
    assert len(gpus) == 2
    assert cpu_processes_warning("box", {"gpus": gpus}, 2) is None
    assert cpu_processes_warning("box", {"gpus": []}, 2).startswith("box has no GPU: torchrun will run 2 processes")
    assert cpu_processes_warning("box", {"gpus": []}, 1) is None
