"""The bundled example trains through offload, remotely and in the local fallback, and its loss falls."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import run_offload

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chargpt"
SHORT = ["--max_iters=30", "--eval_interval=15", "--log_interval=5", "--eval_iters=2", "--n_layer=2",
         "--n_embd=64", "--batch_size=16", "--corpus_chars=200000", "--sample_chars=0"]
ITER_LINE = re.compile(r"^iter (\d+): loss ([0-9.]+), time ([0-9.]+)ms, mfu (-?[0-9.]+)%$", re.M)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    copy = tmp_path / "chargpt"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("out", "__pycache__", ".offload"))
    return copy


def losses(stdout: str) -> list:
    return [float(m.group(2)) for m in ITER_LINE.finditer(stdout)]


def test_example_trains_on_the_host(box, example):
    result = run_offload("run", "train.py", *SHORT, cwd=example, timeout=150)
    assert result.returncode == 0, result.stderr[-2000:]
    found = losses(result.stdout)
    assert len(found) >= 5 and found[-1] < found[0] - 0.3, found
    assert "mfu -100.00%" in result.stdout  # nanoGPT's "not yet" for the first iterations
    # Its mfu is against the peak offload gives it for this device, over the same iterations as the summary's
    # (all after the first three), so its final line's agrees with the summary's.
    assert "mfu against " in result.stdout and "this device's fp32 peak (OFFLOAD_PEAK_TFLOPS)" in result.stdout
    printed = float(re.search(r"^final: .*, mfu ([0-9.]+)%;", result.stdout, re.M).group(1))
    (summary,) = re.findall(r"^  MFU +([0-9.]+)%", result.stderr, re.M)
    assert printed == pytest.approx(float(summary), rel=0.05), (printed, summary)
    project_dirs = list(Path(box["workdir"]).glob("chargpt-*"))
    assert len(project_dirs) == 1 and (project_dirs[0] / "out" / "ckpt.pt").stat().st_size > 10_000
    assert not (example / "out").exists()  # the checkpoint is on the host, not on the laptop


def test_example_falls_back_to_a_local_run(offload_home, example):
    result = run_offload("run", "train.py", *SHORT, "--out_dir=local-out", cwd=example, timeout=150)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "running locally" in result.stderr
    found = losses(result.stdout)
    assert found[-1] < found[0] - 0.3, found
    assert (example / "local-out" / "ckpt.pt").is_file()


def test_example_rejects_a_typo_in_one_line(offload_home, example):
    result = run_offload("run", "train.py", "--batch_sise=8", cwd=example)
    assert result.returncode == 2
    assert "unknown option --batch_sise" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
