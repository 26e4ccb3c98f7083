"""The measured ceiling: how many TFLOPS plain matmuls reach on this host's device.

    python -m remote_agent.matmul_probe SECONDS   ->  one JSON line

On a GPU it times bf16 and fp32 (TF32 off: the fp32 figure means fp32) square matmuls; on a CPU fp32.
Each precision gets about half of SECONDS. The figure is the best of several timed batches, so a brief
stall elsewhere on the host does not lower the ceiling.
"""
import json
import sys
import time


def timed_tflops(torch, device: str, dtype, size: int, budget_s: float) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):  # warm-up: kernel selection, caches, clocks
        a @ b
    sync()
    best, deadline, repeats = 0.0, time.perf_counter() + budget_s, 1
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync()
        elapsed = time.perf_counter() - started
        best = max(best, 2 * size ** 3 * repeats / elapsed / 1e12)
        if elapsed < 0.05:
            repeats *= 2  # batches long enough that timer resolution does not matter
    return round(best, 3)


def main(seconds: float) -> dict:
    import torch

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        result = {"device": "cuda", "name": torch.cuda.get_device_name(0), "size": 8192,
                  "fp32": timed_tflops(torch, "cuda", torch.float32, 8192, seconds / 2)}
        bf16 = torch.cuda.is_bf16_supported()
        result["bf16"] = timed_tflops(torch, "cuda", torch.bfloat16, 8192, seconds / 2) if bf16 else None
        return result
    return {"device": "cpu", "threads": torch.get_num_threads(), "size": 1024,
            "fp32": timed_tflops(torch, "cpu", torch.float32, 1024, seconds), "bf16": None}


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)))
