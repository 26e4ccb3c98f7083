"""Curves (issue 16, point 1): what `offload plot` draws, from recorded metrics and a real nanoGPT log; the terminal
plot at a fixed size, with its axes and both runs' series; the PNG through the CLI (matplotlib is in the test
venv), and the one line when it is missing; a plain nanoGPT run through a real sshd plots too."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_offload
from test_mfu import NANOGPT_CPU_RUN
from test_mfu_runs import NANOGPT_STYLE

from offload.cli.plot_render import MARKERS, render_terminal
from offload.runs.curves import averaged, run_curve
from offload.mfu.report import loss_curve, sparkline

CPU_PEAK, GPU_PEAK = 1.0, 40.0  # TFLOPS: a laptop's CPU, and a 4070 Ti's fp32


def record(project: Path, run_id: str, started: int, log: str = "", metrics: list = (), **meta) -> Path:
    """A run as this laptop keeps it: .offload/runs/ID/ with meta.json, output.log and metrics.jsonl."""
    directory = project / ".offload" / "runs" / run_id
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text(json.dumps({"run_id": run_id, "started_unix": started, **meta}))
    (directory / "output.log").write_text(log)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in metrics))
    return directory


def gpu_metrics(steps: int = 40) -> list:
    """A GPU run's offload_metrics: 4 GFLOP a step in 1 ms after two slow warm-up steps, loss falling."""
    return [{"step": step, "flops": 4e9, "seconds": 0.5 if step < 2 else 0.001, "tokens": 2048,
             "loss": 4.0 - step * 0.05, "dtype": "fp32"} for step in range(steps)]


def test_curves_come_from_metrics_and_from_a_real_nanogpt_log(tmp_path):
    gpu = record(tmp_path, "gpu-run", 2, metrics=gpu_metrics(), device="RTX 4070 Ti", dtype="fp32",
                 mfu=0.1, peak_tflops=GPU_PEAK)
    curve = run_curve(gpu, json.loads((gpu / "meta.json").read_text()))
    assert curve.iters == list(range(40)) and curve.loss[-1] == pytest.approx(4.0 - 39 * 0.05)
    assert curve.train_s[:3] == pytest.approx([0.5, 1.0, 1.001]) and curve.tokens_per_s[-1] == pytest.approx(2048e3)
    assert curve.mfu[-1] == pytest.approx(4e9 / 0.001 / (GPU_PEAK * 1e12))  # 10%
    assert curve.label == "gpu-run on RTX 4070 Ti (fp32, MFU 10.0%)"

    cpu = record(tmp_path, "cpu-run", 1, log=NANOGPT_CPU_RUN, device="Apple M1", dtype="fp32", peak_tflops=CPU_PEAK)
    curve = run_curve(cpu, json.loads((cpu / "meta.json").read_text()))
    assert curve.iters == list(range(0, 130, 10)) and curve.loss[0] == 4.2163 and curve.loss[-1] == 2.3682
    # training time: each line stands for the iterations since the one before it, at its own time per iteration
    assert curve.train_s[:3] == pytest.approx([40.63286, 40.63286 + 10 * 1.97020, 40.63286 + 10 * (1.97020 + 2.00126)])
    assert curve.tokens_per_s[1] == pytest.approx(16384 / 1.97020)
    assert curve.mfu[0] is None and curve.mfu[1] == pytest.approx(0.0019 * 312 / CPU_PEAK)  # its printed 0.19%


def test_a_recorded_example_run_plots_from_its_metrics_not_its_log(tmp_path):
    data = Path(__file__).parent / "data" / "metrics"
    records = [json.loads(line) for line in (data / "chargpt-cpu-40-steps.jsonl").read_text().splitlines()]
    run = record(tmp_path, "example", 1, log=(data / "chargpt-cpu-40-steps.log").read_text(), metrics=records,
                 device="AMD EPYC", dtype="fp32", peak_tflops=0.166)
    curve = run_curve(run, json.loads((run / "meta.json").read_text()))
    assert curve.iters == list(range(40))  # every step's record, not only the 4 logged lines
    assert [loss for loss in curve.loss if loss is not None] == [r["loss"] for r in records if "loss" in r]
    assert curve.train_s[-1] == pytest.approx(sum(r["seconds"] for r in records))
    assert curve.mfu[5] == pytest.approx(records[5]["flops"] / records[5]["seconds"] / 0.166e12)
    assert curve.tokens_per_s[5] == pytest.approx(512 / records[5]["seconds"])


def test_a_long_run_is_averaged_down_and_its_loss_kept_as_a_sparkline():
    from offload.runs.curves import Curve
    long = Curve("x", list(range(1000)), [i * 0.1 for i in range(1000)], [None if i % 2 else 5 - i / 250 for i in range(1000)],
                 [1.0] * 1000, [0.5] * 1000)
    short = averaged(long, 100)
    assert len(short) == 100 and short.iters[0] == 9 and short.iters[-1] == 999
    assert short.loss[0] == pytest.approx(sum(5 - i / 250 for i in range(0, 10, 2)) / 5)  # the Nones left out
    curve = loss_curve([4.0, None, 3.0, 2.5, 2.0, 1.5, 1.4, 1.3, 1.2, 1.1, 1.05, 1.0, 0.99, 0.98], most=6)
    assert len(curve) == 6 and curve[0] > curve[-1]
    assert sparkline([4.0, 3.0, 2.0, 1.0]) == "█▆▃▁" and sparkline([]) == "" and sparkline([2.0, 2.0]) == "▁▁"


def test_the_terminal_plot_has_every_panel_s_axes_and_both_runs_at_a_fixed_size(tmp_path):
    cpu = record(tmp_path, "laptop-run", 1, log=NANOGPT_CPU_RUN, device="Apple M1", dtype="fp32", mfu=0.6,
                 peak_tflops=CPU_PEAK)
    gpu = record(tmp_path, "gpu-run", 2, metrics=gpu_metrics(), device="RTX 4070 Ti", dtype="fp32", mfu=0.1,
                 peak_tflops=GPU_PEAK)
    curves = [run_curve(directory, json.loads((directory / "meta.json").read_text())) for directory in (cpu, gpu)]
    text = render_terminal(curves, 100, 44, colorless=True)
    lines = text.splitlines()
    assert len(lines) <= 44 and max(map(len, lines)) <= 100, (len(lines), max(map(len, lines)))
    for title in ("loss / iteration", "loss / training time (s)", "tokens/s / iteration", "MFU % / training time (s)"):
        assert title in text, text
    assert text.count("└") >= 6 and text.count("┤") >= 12  # six panels, each with ticks on its y axis
    assert lines[-2:] == [f"  {MARKERS[0]} laptop-run on Apple M1 (fp32, MFU 60.0%)",
                          f"  {MARKERS[1]} gpu-run on RTX 4070 Ti (fp32, MFU 10.0%)"]
    canvas = "\n".join(lines[:-2])
    assert canvas.count(MARKERS[0]) > 20 and canvas.count(MARKERS[1]) > 20  # both runs are drawn
    assert "\x1b[" not in text
    assert re.search(r"\b4\.\d", canvas) and re.search(r"\b2\.\d", canvas)  # the loss axis spans 4.2 .. 2.4


def test_offload_plot_writes_a_png_and_says_so_when_matplotlib_is_missing(tmp_path):
    project = tmp_path / "proj"
    record(project, "gpu-run", 2, metrics=gpu_metrics(), device="RTX 4070 Ti", dtype="fp32", mfu=0.1, peak_tflops=GPU_PEAK)
    record(project, "laptop-run", 1, log=NANOGPT_CPU_RUN, device="Apple M1", dtype="fp32", peak_tflops=CPU_PEAK)
    (project / ".git").mkdir()
    image = tmp_path / "curves.png"
    result = run_offload("plot", "gpu-run", "--vs", "laptop-run", "--png", str(image), cwd=project)
    assert result.returncode == 0, result.stderr
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 20_000
    assert f"wrote {image}" in result.stderr

    blocker = tmp_path / "no_matplotlib"  # an import of matplotlib fails here, as where it is not installed
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    result = run_offload("plot", "--png", str(tmp_path / "other.png"), cwd=project,
                         env={"PYTHONPATH": f"{blocker}:{Path(__file__).resolve().parent.parent}"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--png needs matplotlib" in result.stderr and "pip install 'offload[plot]'" in result.stderr


def test_a_plain_nanogpt_run_plots_and_a_project_without_runs_says_so(box, project):
    assert "no runs recorded" in run_offload("plot", cwd=project).stderr
    (project / "nano.py").write_text(NANOGPT_STYLE)
    assert run_offload("run", "nano.py", cwd=project).returncode == 0
    result = run_offload("plot", cwd=project)
    assert result.returncode == 0, result.stderr
    run_id = json.loads(next((project / ".offload" / "runs").glob("*/meta.json")).read_text())["run_id"]
    assert f"{MARKERS[0]} {run_id} on " in result.stdout and "loss / iteration" in result.stdout
    (project / "quiet.py").write_text("print('nothing measured')\n")
    assert run_offload("run", "quiet.py", cwd=project).returncode == 0
    result = run_offload("plot", cwd=project)
    assert result.returncode != 0 and "has nothing to plot" in result.stderr and "Traceback" not in result.stderr
