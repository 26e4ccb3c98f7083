"""The bundled example's MFU on this machine: against the spec peak, the measured matmul ceiling, and the
A100 figure nanoGPT would print.

    .venv/bin/python bench/bench_mfu.py [--iters N] [--bench-seconds S]

Runs `offload hosts check local --bench` (the matmul probe) and then the example through `offload run`
(locally: no host is registered in the benchmark's own OFFLOAD_HOME), and prints the figures side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
A100_BF16_TFLOPS = 312.0  # what nanoGPT measures every device against


def offload(*args: str, cwd: Path, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "offload", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200, help="training iterations of the example")
    parser.add_argument("--bench-seconds", type=float, default=10.0, help="budget of the matmul probe")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        env = {**os.environ, "OFFLOAD_HOME": str(scratch / "offload_home")}
        offload("hosts", "check", "local", "--bench", "--bench-seconds", str(options.bench_seconds), cwd=scratch, env=env)
        ceiling = json.loads((scratch / "offload_home" / "host-state.json").read_text())["local"]["ceiling"]
        example = scratch / "chargpt"
        shutil.copytree(REPO / "examples" / "chargpt", example, ignore=shutil.ignore_patterns("out", "__pycache__", ".offload"))
        offload("run", "train.py", f"--max_iters={options.iters}", "--sample_chars=0", cwd=example, env=env)
        meta = json.loads(next((example / ".offload" / "runs").glob("*/meta.json")).read_text())
    peak, achieved = meta["peak_tflops"], meta["achieved_tflops"]
    rows = [
        ("device", f"{meta['device']} ({meta['device_facts']['cpu']['physical_cores']} cores), {meta['dtype']}"),
        ("spec peak", f"{peak:.3f} TFLOPS  ({meta['peak_source']})"),
        ("measured matmul ceiling", f"{ceiling['fp32']:.3f} TFLOPS  = {ceiling['fp32'] / peak:.0%} of spec peak "
                                    f"({ceiling['size']}x{ceiling['size']} fp32 matmuls, {ceiling['threads']} threads)"),
        ("example achieved", f"{achieved:.3f} TFLOPS  ({meta['iterations']} iterations, {meta['tokens_per_s']:,.0f} tokens/s, "
                             f"MFU from {meta['mfu_source']})"),
        ("MFU vs spec peak", f"{meta['mfu']:.1%}"),
        ("vs measured ceiling", f"{meta['ceiling_fraction']:.1%}"),
        ("nanoGPT's figure (vs A100)", f"{achieved / A100_BF16_TFLOPS:.3%}  (what nanoGPT would print here)"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
