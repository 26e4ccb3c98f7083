"""MFU from figures: nanoGPT's lines (recorded real ones, and the example's own), metrics, hints, estimates."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from offload.mfu.hints import RunFacts, hints
from offload.mfu.nanogpt import nanogpt_device, nanogpt_dtype, parse_nanogpt_line, parse_tokens_per_iter
from offload.mfu.tracker import DEFAULT_GPU_MFU, METRICS_WARMUP_STEPS, MfuTracker, estimate_seconds_on

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chargpt"
H100_SXM_BF16_TFLOPS = 989.4  # dense, NVIDIA's datasheet

# Real nanoGPT output, `python train.py config/train_shakespeare_char.py` on one GPU (from a public fork's
# README, ChennXIao/nanogpt). The first line's time includes compilation.
NANOGPT_GPU_RUN = """\
step 0: train loss 4.2874, val loss 4.2823
iter 0: loss 4.2654, time 13500.54ms, mfu -100.00%
iter 10: loss 3.1462, time 13.86ms, mfu 26.88%
iter 20: loss 2.7321, time 13.74ms, mfu 26.90%
iter 30: loss 2.6184, time 13.75ms, mfu 26.92%
iter 40: loss 2.5757, time 13.75ms, mfu 26.94%
iter 50: loss 2.5249, time 13.75ms, mfu 26.96%
iter 60: loss 2.5143, time 13.77ms, mfu 26.97%
iter 70: loss 2.4947, time 13.77ms, mfu 26.98%
iter 80: loss 2.4935, time 13.76ms, mfu 26.99%
iter 90: loss 2.4691, time 13.76ms, mfu 27.00%
"""
# Real nanoGPT output on a Mac's CPU (a public README): nanoGPT does not stop its clock for evaluation, so
# the iteration after each `step` line takes a minute, and its running mfu sags after each.
NANOGPT_CPU_RUN = """\
tokens per iteration will be: 16,384
found vocab_size = 65
number of parameters: 10.65M
using fused AdamW: False
step 0: train loss 4.1979, val loss 4.2041
iter 0: loss 4.2163, time 40632.86ms, mfu -100.00%
iter 10: loss 3.4410, time 1970.20ms, mfu 0.19%
iter 20: loss 3.0326, time 2001.26ms, mfu 0.19%
iter 30: loss 2.7473, time 2092.32ms, mfu 0.19%
iter 40: loss 2.6612, time 2081.06ms, mfu 0.19%
iter 50: loss 2.6118, time 2073.70ms, mfu 0.19%
iter 60: loss 2.5869, time 2060.92ms, mfu 0.19%
iter 70: loss 2.5273, time 2191.82ms, mfu 0.18%
iter 80: loss 2.4923, time 2282.74ms, mfu 0.18%
iter 90: loss 2.4565, time 2329.04ms, mfu 0.18%
step 100: train loss 2.3848, val loss 2.3995
saving checkpoint to out-shakespeare-char-rope
iter 100: loss 2.4233, time 56530.17ms, mfu 0.16%
iter 110: loss 2.3873, time 2308.90ms, mfu 0.16%
iter 120: loss 2.3682, time 2445.44ms, mfu 0.16%
"""


def tracker_fed(text: str, **kwargs) -> MfuTracker:
    tracker = MfuTracker(**kwargs)
    for line in text.splitlines():
        tracker.feed_line(line)
    return tracker


# --- parsing ------------------------------------------------------------------------------------------

def test_parses_real_nanogpt_lines():
    parsed = [parse_nanogpt_line(line) for line in NANOGPT_GPU_RUN.splitlines()]
    assert parsed[0] is None  # the evaluation line
    assert parsed[1] == {"iter": 0, "loss": 4.2654, "time_s": pytest.approx(13.50054), "mfu": -1.0}
    assert parsed[2] == {"iter": 10, "loss": 3.1462, "time_s": pytest.approx(0.01386), "mfu": pytest.approx(0.2688)}
    assert [p["iter"] for p in parsed[1:]] == list(range(0, 100, 10))


def test_parses_prefixed_and_diverged_lines_and_rejects_others():
    prefixed = parse_nanogpt_line("[default0]:iter 7: loss 2.5000, time 12.00ms, mfu 3.50%\r\n")
    assert prefixed["mfu"] == pytest.approx(0.035)
    assert math.isnan(parse_nanogpt_line("iter 7: loss nan, time 12.00ms, mfu 3.50%")["loss"])
    assert parse_nanogpt_line("iter 7: loss 2.5, time 12.00ms, mfu 3.50% (and more)") is None
    assert parse_nanogpt_line("step 100: train loss 2.3848, val loss 2.3995") is None
    assert parse_nanogpt_line("iter 7: loss 2.5, time 12.00ms") is None


def test_parses_tokens_per_iteration_both_ways():
    assert parse_tokens_per_iter("tokens per iteration will be: 491,520") == 491_520
    assert parse_tokens_per_iter("Tokens per iteration will be: 16,384") == 16_384
    assert parse_tokens_per_iter("tokens per iteration: 2,048 (32 sequences of 64)") == 2048
    assert parse_tokens_per_iter("breaks down as: 40 grad accum steps * 1 processes") is None


# --- device and dtype ----------------------------------------------------------------------------------

def test_nanogpt_device_and_dtype_follow_its_rules():
    assert nanogpt_device([], host_has_cuda=True) == "cuda"
    assert nanogpt_device([], host_has_cuda=False) == "cpu"
    assert nanogpt_device(["--device=cpu"], host_has_cuda=True) == "cpu"
    assert nanogpt_device(["--device=cpu", "--device=cuda:1"], host_has_cuda=True) == "cuda"  # the last wins
    assert nanogpt_dtype([], "cuda", bf16_supported=True) == "bf16"
    assert nanogpt_dtype([], "cuda", bf16_supported=False) == "fp16"
    assert nanogpt_dtype(["--dtype=bfloat16"], "cpu", bf16_supported=True) == "fp32"  # no autocast on CPU
    assert nanogpt_dtype(["--dtype=float32"], "cuda", True) == "fp32"
    assert nanogpt_dtype(["--dtype=float32"], "cuda", True, compute_capability=8.6) == "tf32"
    assert nanogpt_dtype(["--dtype=float32"], "cuda", False, compute_capability=7.5) == "fp32"
    assert nanogpt_dtype(["config/x.py", "--dtype=float16"], "cuda", True) == "fp16"


# --- the tracker: log --------------------------------------------------------------------------------

def test_log_summary_takes_the_median_after_the_first_positive_mfu():
    summary = tracker_fed(NANOGPT_GPU_RUN, peak_tflops=H100_SXM_BF16_TFLOPS, peak_source="table",
                          tokens_per_iter=64 * 256).summary()
    assert summary["source"] == "log"
    # iter 10's 26.88% is one iteration's figure; the median of iter 20's 26.90% .. iter 90's 27.00% is 26.965%
    assert summary["achieved_tflops"] == pytest.approx(0.26965 * 312)
    assert summary["mfu"] == pytest.approx(0.26965 * 312 / H100_SXM_BF16_TFLOPS)
    assert summary["time_per_iter_s"] == pytest.approx(0.013755)  # the median over the same lines
    assert summary["tokens_per_s"] == pytest.approx(16384 / 0.013755)
    assert summary["final_loss"] == 2.4691 and summary["iterations"] == 91
    assert summary["total_flops"] == pytest.approx(0.26965 * 312e12 * 0.013755 * 91)
    assert summary["peak_source"] == "table"


def test_log_summary_shrugs_off_iterations_slowed_by_evaluation():
    summary = tracker_fed(NANOGPT_CPU_RUN, peak_tflops=1.0).summary()
    assert summary["time_per_iter_s"] == pytest.approx(2.19182)  # not pulled towards the 56 s iteration
    assert summary["tokens_per_s"] == pytest.approx(16384 / 2.19182)  # tokens per iteration read from the log
    assert summary["achieved_tflops"] == pytest.approx(0.0018 * 312)


def test_log_with_no_measured_mfu_says_so():
    summary = tracker_fed(NANOGPT_GPU_RUN.splitlines()[1], peak_tflops=312.0).summary()
    assert summary["mfu"] is None and "-100.00%" in summary["reason"]
    assert summary["time_per_iter_s"] == pytest.approx(13.50054)  # the only line there is


def test_unknown_peak_gives_no_mfu_but_the_reason_and_the_achieved_rate():
    reason = "no peak known for 'NVIDIA GeForce GTX 1660 SUPER' in bf16"
    summary = tracker_fed(NANOGPT_GPU_RUN, peak_tflops=None, peak_reason=reason).summary()
    assert summary["mfu"] is None and "GTX 1660" in summary["reason"]
    assert summary["achieved_tflops"] == pytest.approx(0.26965 * 312)
    assert "peak" in tracker_fed(NANOGPT_GPU_RUN).summary()["reason"]


def test_nothing_seen_gives_no_source():
    summary = MfuTracker(peak_tflops=312.0).summary()
    assert summary["source"] is None and summary["mfu"] is None and summary["reason"]
    assert MfuTracker().status() == {"iter": None, "loss": None, "tokens_per_s": None, "mfu": None}


def test_live_status_follows_the_latest_line():
    tracker = tracker_fed(NANOGPT_GPU_RUN, peak_tflops=312.0, tokens_per_iter=16384)
    assert tracker.status() == {"iter": 90, "loss": 2.4691, "tokens_per_s": pytest.approx(16384 / 0.01376),
                                "mfu": pytest.approx(0.27), "a100": True}  # the line says nanoGPT's is an A100's


# --- the tracker: metrics ----------------------------------------------------------------------------

def records(seconds: list, flops: int = 10**12, tokens: int = 1000) -> list:
    return [{"v": 1, "step": i, "flops": flops, "seconds": s, "tokens": tokens, "loss": 5.0 - i / 10, "dtype": "bf16"}
            for i, s in enumerate(seconds)]


def test_metrics_skip_the_warm_up_steps():
    tracker = MfuTracker(peak_tflops=100.0)
    for record in records([30.0, 2.0, 0.5] + [0.02] * 10):  # compilation, then steady steps of 50 TFLOP/s
        assert tracker.feed_metrics(record)
    summary = tracker.summary()
    assert METRICS_WARMUP_STEPS == 3
    assert summary["source"] == "metrics" and summary["mfu"] == pytest.approx(0.5)
    assert summary["achieved_tflops"] == pytest.approx(50.0)
    assert summary["time_per_iter_s"] == pytest.approx(0.02)
    assert summary["tokens_per_s"] == pytest.approx(1000 / 0.02)
    assert summary["iterations"] == 13 and summary["total_flops"] == 13 * 10**12
    assert summary["final_loss"] == pytest.approx(3.8) and summary["dtype"] == "bf16"


@pytest.mark.parametrize("count", [1, 2, 3])
def test_metrics_warm_up_never_takes_every_step(count):
    tracker = MfuTracker(peak_tflops=100.0)
    for record in records([0.04] * (count - 1) + [0.02]):
        tracker.feed_metrics(record)
    assert tracker.summary()["mfu"] == pytest.approx(0.5)  # the last step alone


def test_metrics_take_precedence_over_the_log():
    tracker = tracker_fed(NANOGPT_GPU_RUN, peak_tflops=100.0, dtype="fp16")
    assert tracker.summary()["source"] == "log"
    for record in records([1.0] * 3 + [0.04] * 4):
        tracker.feed_metrics(record)
    tracker.feed_line("iter 100: loss 9.9999, time 1.00ms, mfu 90.00%")  # a later log line changes nothing
    summary = tracker.summary()
    assert summary["source"] == "metrics" and summary["mfu"] == pytest.approx(0.25)
    assert summary["final_loss"] == pytest.approx(4.4) and summary["dtype"] == "bf16"
    assert tracker.status()["iter"] == 6 and tracker.status()["mfu"] == pytest.approx(0.25)


def test_metrics_records_that_are_not_records_are_ignored():
    tracker = MfuTracker(peak_tflops=100.0)
    assert not tracker.feed_metrics({"step": 1, "flops": "many", "seconds": 1.0})
    assert not tracker.feed_metrics({"step": 1, "flops": 5, "seconds": math.nan})
    assert tracker.summary()["source"] is None


# --- hints ---------------------------------------------------------------------------------------------

GOOD = dict(args=["config/train_shakespeare_char.py", "--batch_size=64", "--block_size=256", "--log_interval=10"],
            device_kind="cuda", host_has_cuda=True, compute_capability=8.9, dtype="bf16", time_per_iter_s=0.005,
            mfu=0.2, tokens_per_iter=16384)


def facts(**changes) -> dict:
    changed = dict(GOOD, **changes)
    changed["args"] = GOOD["args"] + changes.get("args", [])
    return changed


def test_no_hints_for_a_well_set_up_run():
    assert hints(GOOD) == []
    assert hints(RunFacts(**GOOD)) == []


def test_device_cpu_on_a_gpu_host():
    [hint] = hints(facts(args=["--device=cpu"], device_kind="cpu", dtype="fp32"))
    assert "--device=cpu" in hint
    [hint] = hints(facts(device_kind="cpu", dtype="fp32"))  # a config file chose the CPU
    assert "--device=cuda" in hint
    assert hints(facts(args=["--device=cpu"], device_kind="cpu", dtype="fp32", host_has_cuda=False,
                           compute_capability=None)) == []
    # the CPU hint stands even when the CPU run itself is efficient
    assert len(hints(facts(args=["--device=cpu"], device_kind="cpu", dtype="fp32", mfu=0.7))) == 1


def test_compile_false_on_a_gpu():
    [hint] = hints(facts(args=["--compile=False"]))
    assert "--compile=False" in hint
    assert hints(facts(args=["--compile=True"])) == []
    on_the_cpu = hints(facts(args=["--compile=False", "--device=cpu"], device_kind="cpu"))
    assert not any("compile" in h for h in on_the_cpu)


@pytest.mark.parametrize("dtype", ["fp32", "tf32"])
def test_full_precision_on_a_gpu_with_bf16_tensor_cores(dtype):
    [hint] = hints(facts(dtype=dtype))
    assert "--dtype=bfloat16" in hint
    assert hints(facts(dtype=dtype, compute_capability=7.5)) == []  # a Turing card has no bf16 tensor cores


def test_tiny_batch_on_a_gpu():
    [hint] = hints(facts(args=["--batch_size=12", "--block_size=64"]))  # 768 tokens
    assert "768 tokens" in hint and "--batch_size" in hint
    assert hints(facts(args=["--batch_size=16", "--block_size=256"])) == []  # 4,096: enough
    # without both in the args, the printed tokens per iteration decide
    assert len(hints(facts(args=["--batch_size=abc"], tokens_per_iter=2048))) == 1


def test_printing_every_fast_iteration():
    [hint] = hints(facts(args=["--log_interval=1"]))
    assert "--log_interval=1" in hint and "5.0 ms" in hint
    assert hints(facts(args=["--log_interval=1"], time_per_iter_s=0.050)) == []
    assert hints(facts(args=["--log_interval=1"], time_per_iter_s=None)) == []


def test_a_run_with_high_mfu_gets_no_tuning_hints():
    assert hints(facts(args=["--compile=False", "--log_interval=1"], dtype="fp32", mfu=0.55)) == []


# --- estimates -----------------------------------------------------------------------------------------

def test_estimates_seconds_on_another_device():
    assert DEFAULT_GPU_MFU == 0.35
    # 3.5e15 FLOPs on a 100 TFLOPS device at the default 35%: 100 s
    assert estimate_seconds_on(3.5e15, 100.0) == pytest.approx(100.0)
    assert estimate_seconds_on(3.5e15, 100.0, mfu=0.07) == pytest.approx(500.0)
    with pytest.raises(ValueError):
        estimate_seconds_on(1e12, 0.0)


# --- the example's own output ---------------------------------------------------------------------------

def test_reads_the_example_s_real_output(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OFFLOAD_METRICS")}
    done = subprocess.run(
        [sys.executable, "train.py", "--max_iters=12", "--eval_interval=100", "--eval_iters=1", "--log_interval=1",
         "--n_layer=2", "--n_embd=64", "--batch_size=8", "--block_size=32", "--corpus_chars=20000",
         "--sample_chars=0", f"--out_dir={tmp_path / 'out'}"],
        cwd=EXAMPLE, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "model FLOPs" not in done.stdout  # offload_metrics is not importable: the script runs as before
    tracker = MfuTracker(peak_tflops=1.0)
    for line in done.stdout.splitlines():
        tracker.feed_line(line)
    assert tracker.tokens_per_iter == 8 * 32
    assert [line["iter"] for line in tracker.log_lines] == list(range(12))
    assert all(line["mfu"] == -1.0 for line in tracker.log_lines[:3])  # the example measures after 3 warm-up ones
    assert all(line["mfu"] >= 0 for line in tracker.log_lines[3:])
    assert "mfu against an A100's 312 TFLOPS (no OFFLOAD_PEAK_TFLOPS: not run by offload)" in done.stdout
    summary = tracker.summary()
    assert summary["source"] == "log" and summary["iterations"] == 12
    assert summary["tokens_per_s"] == pytest.approx(256 / summary["time_per_iter_s"])
    assert summary["final_loss"] == tracker.log_lines[-1]["loss"]
