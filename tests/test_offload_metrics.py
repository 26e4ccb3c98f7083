"""remote_agent/lib/offload_metrics.py: the lines it writes, the FLOPs it counts, and the example using it."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from offload.mfu.nanogpt import parse_nanogpt_line
from offload.mfu.tracker import MfuTracker, valid_metrics

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "remote_agent" / "lib"
EXAMPLE = ROOT / "examples" / "chargpt"


def load_module():
    spec = importlib.util.spec_from_file_location("offload_metrics", LIB / "offload_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


offload_metrics = load_module()


@pytest.fixture
def metrics_path(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("OFFLOAD_METRICS", str(path))
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return path


def lines_of(path: Path) -> list:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# --- the lines -----------------------------------------------------------------------------------------

def test_writes_one_well_formed_line_per_step(metrics_path):
    assert offload_metrics.enabled()
    offload_metrics.log_step(0, 1.5e9, 0.25, tokens=2048, loss=torch.tensor(4.25), dtype=torch.bfloat16)
    offload_metrics.log_step(1, 1_500_000_000, 0.125, dtype="float32")
    assert lines_of(metrics_path) == [
        {"v": 1, "step": 0, "flops": 1_500_000_000, "seconds": 0.25, "tokens": 2048, "loss": 4.25, "dtype": "bf16"},
        {"v": 1, "step": 1, "flops": 1_500_000_000, "seconds": 0.125, "dtype": "fp32"},
    ]
    assert all(valid_metrics(json.loads(line)) for line in metrics_path.read_text().splitlines())  # what offload reads


def test_a_diverged_loss_is_written_as_null(metrics_path):
    offload_metrics.log_step(3, 10, 0.1, loss=float("nan"))
    assert lines_of(metrics_path)[0]["loss"] is None  # strict JSON has no NaN


def test_writes_nothing_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("OFFLOAD_METRICS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert not offload_metrics.enabled()
    offload_metrics.log_step(0, 1e9, 0.1, loss=1.0)
    assert list(tmp_path.iterdir()) == []


def test_only_rank_0_writes(metrics_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    offload_metrics.log_step(0, 1e9, 0.1)
    assert not metrics_path.exists()
    monkeypatch.setenv("RANK", "0")
    offload_metrics.log_step(0, 1e9, 0.1)
    assert len(lines_of(metrics_path)) == 1


def test_per_rank_figures_become_the_job_s(metrics_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    offload_metrics.log_step(0, 1000, 0.1, tokens=256, per_rank=True)
    offload_metrics.log_step(1, 4000, 0.1, tokens=1024)
    assert [(r["flops"], r["tokens"]) for r in lines_of(metrics_path)] == [(4000, 1024), (4000, 1024)]


def test_bad_figures_are_the_caller_s_error(metrics_path):
    with pytest.raises(ValueError, match="dtype"):
        offload_metrics.log_step(0, 1e9, 0.1, dtype="int8")
    with pytest.raises(ValueError, match="negative"):
        offload_metrics.log_step(0, -1, 0.1)
    assert not metrics_path.exists()


def test_an_unwritable_file_warns_once_and_training_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OFFLOAD_METRICS", str(tmp_path / "no-such-dir" / "metrics.jsonl"))
    offload_metrics.log_step(0, 1e9, 0.1)
    offload_metrics.log_step(1, 1e9, 0.1)
    assert capsys.readouterr().err.count("cannot write") == 1


def test_imports_without_torch_and_parses_as_python_3_8():
    source = (LIB / "offload_metrics.py").read_text()
    ast.parse(source, feature_version=(3, 8))
    assert not (LIB / "__init__.py").exists()  # a directory on PYTHONPATH, not a package
    done = subprocess.run([sys.executable, "-c", "import sys, offload_metrics; print('torch' in sys.modules)"],
                          env=dict(os.environ, PYTHONPATH=str(LIB)), capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "False", done.stderr


# --- counting FLOPs ------------------------------------------------------------------------------------

def test_counts_an_mlp_s_matmuls_forward_and_backward():
    torch.manual_seed(0)
    M, K, H, N = 8, 32, 64, 16  # batch, input, hidden, output
    mlp = torch.nn.Sequential(torch.nn.Linear(K, H), torch.nn.ReLU(), torch.nn.Linear(H, N, bias=False))

    def step(x):
        mlp(x).square().mean().backward()

    first, second = 2 * M * K * H, 2 * M * H * N  # one (M×K)·(K×H) product, one (M×H)·(H×N)
    # forward, weight gradient, input gradient; the input needs none for the first layer (bias adds are free)
    assert offload_metrics.count_step_flops(step, torch.randn(M, K)) == 2 * first + 3 * second
    assert offload_metrics.count_step_flops(step, x=torch.randn(M, K, requires_grad=True)) == 3 * first + 3 * second
    assert mlp[0].weight.grad is not None  # the step ran for real


def test_counts_attention_on_the_cpu_as_model_flops():
    b, h, t, d = 2, 3, 16, 8
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))

    def step():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    # Q·Kᵀ and P·V are 2·b·h·t·t·d each; the backward does four such products (PaLM's 12·L·H·Q·T per token)
    assert offload_metrics.count_step_flops(step) == 3 * 2 * (2 * b * h * t * t * d)


# --- the example, as a real process --------------------------------------------------------------------

SMALL = ["--max_iters=10", "--eval_interval=100", "--eval_iters=1", "--log_interval=3", "--n_layer=2",
         "--n_head=2", "--n_embd=64", "--batch_size=8", "--block_size=32", "--corpus_chars=20000", "--sample_chars=0"]


def start_example(tmp_path: Path, name: str, *args: str, **env) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if k not in ("OFFLOAD_METRICS", "RANK", "WORLD_SIZE")},
           "PYTHONPATH": str(LIB), "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, "train.py", *SMALL, *args, f"--out_dir={tmp_path / name}"], cwd=EXAMPLE,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stderr[-2000:]
    return stdout


def palm_flops_per_iter(vocab_size: int) -> float:
    """The example's own estimate: 6N + 12·L·H·Q·T FLOPs per token (model.estimate_flops_per_iter), × tokens."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from model import GPT, GPTConfig
    finally:
        sys.path.remove(str(EXAMPLE))
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=64))
    return model.estimate_flops_per_iter(8)  # 8 sequences


def test_the_example_records_every_iteration(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    stdout = finish(start_example(tmp_path, "out", OFFLOAD_METRICS=str(metrics)))
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert all(valid_metrics(r) for r in records)  # what offload reads
    assert [r["step"] for r in records] == list(range(10))
    assert {(r["flops"], r["tokens"], r["dtype"]) for r in records} == {(records[0]["flops"], 8 * 32, "fp32")}
    assert f"model FLOPs per iteration (counted): {records[0]['flops']:,}" in stdout
    printed = {p["iter"]: p for p in map(parse_nanogpt_line, stdout.splitlines()) if p}
    assert sorted(printed) == [0, 3, 6, 9]
    for r in records:  # the same dt the script prints; the loss only where the script reads it anyway
        if r["step"] in printed:
            assert r["seconds"] == pytest.approx(printed[r["step"]]["time_s"], abs=6e-6)
            assert r["loss"] == pytest.approx(printed[r["step"]]["loss"], abs=5.1e-5)
        else:
            assert "loss" not in r

    vocab_size = int(next(line for line in stdout.splitlines() if line.startswith("vocab size:")).split()[-1])
    palm = palm_flops_per_iter(vocab_size)
    # 1.6% under it: biases and LayerNorm weights are in N, so 6N counts them as if they were matmul weights
    assert records[0]["flops"] == pytest.approx(palm, rel=0.05)
    assert records[0]["flops"] < palm

    tracker = MfuTracker(peak_tflops=1.0)
    for r in records:
        tracker.feed_metrics(r)
    for line in stdout.splitlines():
        tracker.feed_line(line)
    summary = tracker.summary()
    measured = records[3:]
    assert summary["source"] == "metrics"
    flops_per_s = sum(r["flops"] for r in measured) / sum(r["seconds"] for r in measured)
    assert summary["achieved_tflops"] == pytest.approx(flops_per_s / 1e12)
    assert summary["mfu"] == pytest.approx(summary["achieved_tflops"])
    assert summary["iterations"] == 10 and summary["dtype"] == "fp32"


def test_counting_leaves_the_example_s_training_unchanged(tmp_path):
    # with dropout on, a counting pass that drew random numbers (or left its gradients) would change the losses
    counted_run = start_example(tmp_path, "counted", "--dropout=0.1", OFFLOAD_METRICS=str(tmp_path / "m.jsonl"))
    plain_run = start_example(tmp_path, "plain", "--dropout=0.1")  # importable, but no OFFLOAD_METRICS
    counted, plain = finish(counted_run), finish(plain_run)

    def losses(stdout):
        return [line.split(", time")[0] for line in stdout.splitlines() if line.startswith(("iter", "step"))]
    assert len(losses(plain)) == 6 and losses(counted) == losses(plain)
    assert "model FLOPs" in counted and "model FLOPs" not in plain
