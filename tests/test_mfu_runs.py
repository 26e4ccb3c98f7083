"""MFU end to end: real runs through the real sshd (and locally), checked against independent counts."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import register_host, run_offload, start_offload
from offload.mfu.nanogpt import A100_BF16_PEAK_TFLOPS
from offload.mfu.tracker import METRICS_WARMUP_STEPS
from offload.mfu.peaks import cpu_peak
from offload.runs.record import load_runs
from remote_agent.cpu import cpu_facts
from terminal import read_terminal
from test_example import EXAMPLE, SHORT, example  # noqa: F401  (the fixture, a fresh copy of the example)

REPO = Path(__file__).resolve().parent.parent
NANOGPT_STYLE = """import sys, time
print("tokens per iteration will be: 8,192")
for it in range(12):
    time.sleep(0.02)
    print(f"iter {it}: loss {4.0 - it * 0.1:.4f}, time 20.00ms, mfu {-100.0 if it < 5 else 0.05:.2f}%")
"""


def last_meta(project: Path) -> dict:
    return load_runs(project)[-1]


def counted_flops_per_step(vocab_size: int) -> int:
    """The example's model at the SHORT settings, one forward+backward counted by FlopCounterMode here."""
    import torch

    sys.path[:0] = [str(EXAMPLE), str(REPO / "remote_agent" / "lib")]
    try:
        import offload_metrics
        from model import GPT, GPTConfig
    finally:
        del sys.path[:2]
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64))
    x = torch.randint(vocab_size, (16, 64))

    def forward_backward():
        _, loss = model(x, x)
        loss.backward()

    flops = offload_metrics.count_step_flops(forward_backward)
    palm = (6 * model.get_num_params() + 12 * 2 * 4 * 16 * 64) * 16 * 64  # 6N + 12·L·H·Q·T per token
    assert abs(flops - palm) / palm < 0.05, (flops, palm)  # FlopCounterMode and PaLM's formula agree
    return flops


def test_mfu_of_the_example_on_the_host_agrees_with_flops_counted_here(box, example):
    result = run_offload("run", "train.py", *SHORT, cwd=example, timeout=150)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = last_meta(example)
    assert meta["mfu_source"] == "metrics" and meta["dtype"] == "fp32" and meta["device_kind"] == "cpu"
    stated = cpu_peak(meta["device_facts"]["cpu"], "fp32")
    assert meta["peak_tflops"] == pytest.approx(stated.tflops)
    assert meta["device_facts"]["cpu"]["model"] == cpu_facts()["model"]  # the host here is this machine
    records = [json.loads(line) for line in (example / ".offload" / "runs" / meta["run_id"] / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == list(range(30))
    vocab_size = int(re.search(r"vocab size: (\d+)", result.stdout).group(1))
    measured = records[METRICS_WARMUP_STEPS:]
    expected = counted_flops_per_step(vocab_size) * len(measured) / sum(r["seconds"] for r in measured) \
        / (stated.tflops * 1e12)
    assert meta["mfu"] == pytest.approx(expected, rel=0.05)
    assert 0 < meta["mfu"] < 1
    assert meta["final_loss"] == [r["loss"] for r in records if r.get("loss") is not None][-1]
    assert "MFU" in result.stderr and "peak TFLOPS" in result.stderr and "achieved TFLOPS" in result.stderr


def test_nanogpt_lines_are_rescaled_to_the_real_peak(offload_home, sshd, project):
    register_host(offload_home, sshd)
    (project / "nano.py").write_text(NANOGPT_STYLE)
    result = run_offload("run", "nano.py", cwd=project)
    assert result.returncode == 0, result.stderr
    meta = last_meta(project)
    peak = cpu_peak(meta["device_facts"]["cpu"], "fp32").tflops
    assert meta["mfu_source"] == "log" and meta["peak_tflops"] == pytest.approx(peak)
    # nanoGPT printed 0.05% of an A100's 312 TFLOPS: 0.156 TFLOPS achieved, over this CPU's real peak
    assert meta["achieved_tflops"] == pytest.approx(0.0005 * A100_BF16_PEAK_TFLOPS)
    assert meta["mfu"] == pytest.approx(0.0005 * A100_BF16_PEAK_TFLOPS / peak)
    assert meta["tokens_per_s"] == pytest.approx(8192 / 0.020)
    assert meta["final_loss"] == pytest.approx(2.9)
    # shown as written, not as markup; and plain that nanoGPT's own figure is of an A100
    assert "(from its printed mfu, rescaled to this device from the A100 (312 TFLOPS) nanoGPT measures against)" \
        in result.stderr, result.stderr


def test_peak_tflops_in_hosts_yaml_overrides_the_table(offload_home, sshd, project):
    register_host(offload_home, sshd, peak_tflops={"fp32": 2.0})
    (project / "nano.py").write_text(NANOGPT_STYLE)
    result = run_offload("run", "nano.py", cwd=project)
    meta = last_meta(project)
    assert meta["peak_tflops"] == 2.0 and "hosts.yaml" in meta["peak_source"]
    assert meta["mfu"] == pytest.approx(0.0005 * A100_BF16_PEAK_TFLOPS / 2.0)
    assert "peak_tflops.fp32 = 2 in hosts.yaml" in result.stderr


def test_a_run_without_iterations_keeps_why_mfu_is_not_available_and_says_nothing(box, project):
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 0
    meta = last_meta(project)
    assert meta["mfu"] is None and meta["mfu_source"] is None
    assert meta["mfu_reason"] == "the run printed no iteration lines and wrote no metrics"
    assert "MFU" not in result.stderr  # nothing was measured: no `MFU n/a` line (issue 13)


def test_measured_ceiling_is_kept_and_shown_with_runs(offload_home, sshd, project):
    register_host(offload_home, sshd)
    # the shortest probe the CLI allows: a 1024² CPU matmul takes milliseconds, so it still times many
    checked = run_offload("hosts", "check", "box", "--bench", "--bench-seconds", "0.5", timeout=150)
    assert checked.returncode == 0, checked.stderr
    ceiling = json.loads((offload_home.path / "host-state.json").read_text())["box"]["ceiling"]
    assert ceiling["device"] == "cpu" and ceiling["fp32"] > 0
    assert f"fp32 {ceiling['fp32']:.3g}" in checked.stdout
    (project / "nano.py").write_text(NANOGPT_STYLE)
    result = run_offload("run", "nano.py", cwd=project)
    meta = last_meta(project)
    assert meta["ceiling_fraction"] == pytest.approx(meta["achieved_tflops"] / ceiling["fp32"])
    assert "of measured ceiling" in result.stderr


def test_offload_runs_lists_host_device_exit_loss_and_mfu(box, project):
    (project / "nano.py").write_text(NANOGPT_STYLE)
    assert run_offload("run", "nano.py", cwd=project).returncode == 0
    (project / "fail.py").write_text("import sys; sys.exit(4)\n")
    assert run_offload("run", "fail.py", cwd=project).returncode == 4
    listing = run_offload("runs", cwd=project)
    assert listing.returncode == 0
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert len(rows) == 2 and all(row[1] == "box" for row in rows)
    nano, fail = rows
    # the loss falls from 4.0 to 2.9 over twelve lines: the sparkline goes from the top block to the bottom one
    assert nano[-4:-1] == ["2.9000", "█▇▇▆▅▅▄▄▃▂▂▁", f"{last_meta_mfu(project, 0) * 100:.1f}%"] and nano[-5] == "0"
    assert fail[-4:] == ["4", "?", "n/a", "fail.py"] and nano[-1] == "nano.py"  # no loss, no curve; the command last


def last_meta_mfu(project: Path, index: int) -> float:
    return load_runs(project)[index]["mfu"]


def test_a_local_fallback_run_estimates_the_time_on_gpu_hosts(offload_home, sshd, project):
    from sshd_server import closed_port

    register_host(offload_home, sshd, name="gpubox", port=closed_port(), peak_tflops={"bf16": 80.2, "fp32": 40.1})
    (project / "nano.py").write_text(NANOGPT_STYLE)
    result = run_offload("run", "nano.py", cwd=project)
    assert result.returncode == 0 and "running locally" in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "on gpubox (estimate)" in line]
    assert "80.2 TFLOPS bf16 at 35.0% MFU" in line


def test_hints_come_from_facts(offload_home, sshd, project):
    # The host's peak is given: on a CPU whose own peak is small, the run's 0.16 TFLOPS would read as an MFU
    # high enough (>= 50%) to need no hints at all, and this test would depend on the machine it runs on.
    register_host(offload_home, sshd, peak_tflops=10.0)
    (project / "nano.py").write_text(NANOGPT_STYLE.replace("20.00ms", "5.00ms"))
    result = run_offload("run", "nano.py", "--log_interval=1", cwd=project)
    assert "hint: --log_interval=1 prints" in result.stderr
    result = run_offload("run", "nano.py", "--log_interval=10", cwd=project)
    assert "hint:" not in result.stderr


def test_the_status_line_shows_iteration_loss_and_mfu_on_a_terminal(box, project):
    import pty

    (project / "nano.py").write_text(NANOGPT_STYLE)
    leader, follower = pty.openpty()
    proc = start_offload("run", "nano.py", cwd=project, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    try:
        seen = read_terminal(leader, 60)  # until the process has closed the pty
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(leader)
    assert re.search(rb"\r\x1b\[Kiter 11 \| loss 2\.9000 \| 409\.6k tok/s \| MFU \d+\.\d%", seen), seen[-2000:]


def test_hosts_check_local_reports_this_machine_and_its_peaks(offload_home):
    checked = run_offload("hosts", "check", "local")
    assert checked.returncode == 0, checked.stderr
    cpu = cpu_facts()
    assert "local (this machine)" in checked.stdout and cpu["model"] in checked.stdout
    assert f"fp32 {cpu_peak(cpu, 'fp32').tflops:.3g}" in checked.stdout


def nanogpt_style(printed_mfu_percent: float) -> str:
    return NANOGPT_STYLE.replace("0.05:.2f", f"{printed_mfu_percent}:.3f")


def test_a_measured_ceiling_above_the_peak_becomes_the_peak(offload_home, sshd, project):
    register_host(offload_home, sshd, peak_tflops={"fp32": 0.0001})  # a peak any CPU's matmuls beat
    checked = run_offload("hosts", "check", "box", "--bench", "--bench-seconds", "0.5", timeout=150)
    assert checked.returncode == 0, checked.stderr
    ceiling = json.loads((offload_home.path / "host-state.json").read_text())["box"]["ceiling"]["fp32"]
    assert ceiling > 0.0001
    (project / "nano.py").write_text(nanogpt_style(0.001))  # 0.001% of an A100: 0.00312 TFLOPS achieved
    result = run_offload("run", "nano.py", cwd=project)
    assert result.returncode == 0, result.stderr
    meta = last_meta(project)
    assert meta["peak_tflops"] == pytest.approx(ceiling)
    assert meta["peak_source"].startswith("measured matmul ceiling") and "higher one is used" in meta["peak_source"]
    assert meta["mfu"] == pytest.approx(0.00001 * A100_BF16_PEAK_TFLOPS / ceiling) and meta["mfu"] <= 1.0
    assert "measured matmul ceiling (offload hosts check --bench), above the 0.0001 TFLOPS" in result.stderr


def test_mfu_is_never_over_100_percent(offload_home, sshd, project):
    register_host(offload_home, sshd, peak_tflops={"fp32": 0.0001})  # no ceiling measured: the peak stays too low
    (project / "nano.py").write_text(NANOGPT_STYLE)  # 0.156 TFLOPS achieved
    result = run_offload("run", "nano.py", cwd=project)
    assert result.returncode == 0, result.stderr
    meta = last_meta(project)
    assert meta["mfu"] is None and "above the peak of 0.0001, which must be too low" in meta["mfu_reason"]
    assert re.search(r"MFU\s+n/a \(achieved 0.156 TFLOPS is above the peak", result.stderr), result.stderr
    assert not re.search(r"\d{3,}(\.\d+)?%", result.stderr)  # no 1560000% anywhere, live line or summary
