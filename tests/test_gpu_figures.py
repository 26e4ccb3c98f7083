"""The GPU's own figures (issue 16, point 2): nvidia-smi's utilisation, memory and power, parsed from recorded real
outputs (tests/data/nvidia-smi-usage/), kept over a run, shown on the status line and in the summary with their
mean and peak, and the hints they give. Through the real CLI and sshd, a host whose GPU is a stand-in nvidia-smi
printing those recorded outputs (the GPU is the one thing a test may fake) streams them, and `offload status`
shows them; a CPU host (this machine, no nvidia-smi) has none."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from conftest import register_host, run_offload, start_offload

from offload.mfu.gpu_figures import GpuFigures, figures_text, node_figures
from offload.mfu.hints import RunFacts, hints
from offload.mfu.report import gpu_rows, status_text
from remote_agent.gpu_usage import Sampler, parse_usage

DATA = Path(__file__).parent / "data"
USAGE = DATA / "nvidia-smi-usage"


def recorded(name: str) -> list:
    return parse_usage((USAGE / name).read_text())


def test_recorded_outputs_parse_in_any_column_order_with_or_without_units():
    assert recorded("rtx-pro-6000-blackwell.csv") == [{"util_pct": 10.0, "power_w": 26.47, "power_limit_w": 600.0,
                                                       "memory_used_mib": 2082.0, "memory_total_mib": 97887.0}]
    assert recorded("gb10-unified-memory.csv") == [{"util_pct": 0.0, "power_w": 5.04, "power_limit_w": None,
                                                    "memory_used_mib": None, "memory_total_mib": None}]
    assert recorded("rtx-4090-idle.csv") == [{"util_pct": 0.0, "memory_used_mib": 678.0, "memory_total_mib": 49140.0}]
    assert recorded("llama-server-6gib.csv") == [{"util_pct": 95.0, "memory_used_mib": 745.0, "memory_total_mib": 6144.0}]
    rig = recorded("gtx-1080-ti-x6-nounits.csv")
    assert len(rig) == 6 and [gpu["util_pct"] for gpu in rig] == [98.0] * 5 + [97.0]
    assert parse_usage("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n") == []


def test_a_node_s_gpus_make_one_sample_and_a_run_keeps_their_mean_and_peak():
    rig = node_figures(recorded("gtx-1080-ti-x6-nounits.csv"))
    assert rig["util_pct"] == pytest.approx((98 * 5 + 97) / 6) and rig["gpus"] == 6
    assert rig["power_w"] == pytest.approx(211.44 + 212.56 + 214.62 + 213.88 + 218.09 + 208.80)
    assert rig["power_limit_w"] == pytest.approx(6 * 212.5) and rig["memory_used_mib"] is None
    assert figures_text(node_figures(recorded("rtx-pro-6000-blackwell.csv"))) == "GPU 10% · 2.0/95.6 GiB · 26 W"
    assert figures_text(node_figures(recorded("gb10-unified-memory.csv"))) == "GPU 0% · 5 W"  # no memory figures
    figures = GpuFigures()
    for name in ("rtx-4090-idle.csv", "llama-server-6gib.csv"):
        figures.add(recorded(name))
    summary = figures.summary()
    assert summary["gpu_samples"] == 2 and summary["gpu_util_mean"] == pytest.approx(47.5)
    assert summary["gpu_util_peak"] == 95.0 and summary["gpu_memory_peak_mib"] == 745.0
    assert summary["gpu_memory_total_mib"] == 49140.0 and summary["gpu_power_mean_w"] is None
    assert GpuFigures().summary() == {}  # a CPU host: nothing, not zeros


def test_status_line_summary_and_hints_say_what_the_figures_mean():
    line = status_text({"iter": 120, "loss": 2.31, "tokens_per_s": 28100, "mfu": 0.123,
                        "gpu": node_figures(recorded("rtx-pro-6000-blackwell.csv"))})
    assert line == "iter 120 | loss 2.3100 | 28.1k tok/s | MFU 12.3% | GPU 10% · 2.0/95.6 GiB · 26 W"
    figures = GpuFigures()
    figures.add(recorded("rtx-pro-6000-blackwell.csv"))
    assert gpu_rows(figures.summary()) == [("GPU utilisation", "mean 10%, peak 10% (1 samples)"),
                                           ("GPU memory", "peak 2.0 of 95.6 GiB"),
                                           ("GPU power", "mean 26 W, peak 26 W (limit 600 W)")]
    busy = hints(RunFacts(device_kind="cuda", host_has_cuda=True, mfu=0.04, gpu_util_mean=97.8))
    assert any("busy 98% of the time yet reached 4.0% MFU" in hint and "launch-bound" in hint for hint in busy)
    idle = hints(RunFacts(device_kind="cuda", host_has_cuda=True, mfu=0.2, gpu_util_mean=10.0))
    assert any("busy only 10% of the time" in hint and "input-bound" in hint for hint in idle)
    fine = hints(RunFacts(device_kind="cuda", host_has_cuda=True, mfu=0.3, gpu_util_mean=90.0))
    assert not any("busy" in hint for hint in fine)
    assert not any("busy" in hint for hint in hints(RunFacts(device_kind="cpu", mfu=0.01)))  # no GPU figures


def fake_gpu_host(directory: Path) -> Path:
    """A `python` for hosts.yaml whose agent finds a stand-in nvidia-smi first on its PATH: it prints the
    recorded RTX PRO 6000 usage, a recorded GPU for the device facts, and no compute apps."""
    bin_dir = directory / "fake-gpu"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   'case "$*" in\n'
                   f'  *utilization.gpu*) cat {USAGE / "rtx-pro-6000-blackwell.csv"} ;;\n'
                   f'  *compute-apps*) cat {DATA / "nvidia-smi-apps" / "header-only.csv"} ;;\n'
                   f'  *) cat {DATA / "nvidia-smi" / "rtx-4070-ti-super.csv"} ;;\n'
                   "esac\n")
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nPATH={bin_dir}:$PATH OFFLOAD_GPU_SAMPLE_S=0.2 exec {sys.executable} "$@"\n')
    for path in (smi, python):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return python


STEADY = "import time\nprint('started', flush=True)\nfor i in range(12):\n    time.sleep(0.1)\n    print('tick', i, flush=True)\n"


def test_a_gpu_host_streams_its_figures_to_the_summary_and_status(offload_home, sshd, project, tmp_path):
    register_host(offload_home, sshd, python=str(fake_gpu_host(tmp_path)))
    (project / "steady.py").write_text(STEADY)
    (project / "hold.py").write_text("import time\nprint('holding', flush=True)\ntime.sleep(30)\n")
    result = run_offload("run", "steady.py", "--device=cpu", cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "GPU utilisation" in result.stderr and "mean 10%, peak 10%" in result.stderr, result.stderr
    assert "peak 2.0 of 95.6 GiB" in result.stderr and "limit 600 W" in result.stderr
    meta = json.loads(sorted((project / ".offload" / "runs").glob("*/meta.json"))[-1].read_text())
    assert meta["gpu_util_mean"] == 10.0 and meta["gpu_samples"] >= 2 and meta["gpu_power_limit_w"] == 600.0

    proc = start_offload("run", "--detach", "hold.py", cwd=project)
    assert proc.wait(timeout=60) == 0
    status = run_offload("status", "last", cwd=project)
    assert "running" in status.stdout and "; GPU 10% · 2.0/95.6 GiB · 26 W" in status.stdout, status.stdout
    assert run_offload("stop", "last", cwd=project).returncode == 0
    proc.stdout.close()
    proc.stderr.close()


def test_a_cpu_host_has_no_gpu_figures(box, project):
    (project / "steady.py").write_text(STEADY)
    result = run_offload("run", "steady.py", cwd=project, timeout=120)
    assert result.returncode == 0 and "GPU utilisation" not in result.stderr and "GPU " not in result.stderr
    meta = json.loads(next((project / ".offload" / "runs").glob("*/meta.json")).read_text())
    assert not any(key.startswith("gpu_") for key in meta)
    assert Sampler.started() is None  # this machine has no nvidia-smi: no sampler, nothing made up
