"""Which device a run computes on, at which precision, and the peak its MFU is measured against.

The device is the host's first GPU (nvidia-smi) unless there is none or the script is told --device=cpu;
the precision is the script's --dtype, else what nanoGPT picks there (see nanogpt.py). A
`peak_tflops` in hosts.yaml beats offload's table, and a measured matmul ceiling above either beats both.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from offload.mfu.nanogpt import nanogpt_device, nanogpt_dtype
from offload.mfu.peaks import Peak, cpu_peak, gpu_peak, override_peak


@dataclass(frozen=True)
class RunDevice:
    kind: str                  # "cuda" or "cpu"
    name: str                  # the GPU's name exactly as nvidia-smi prints it, or the CPU's model
    count: int                 # devices the job runs on: its GPUs, or 1 CPU
    dtype: str                 # the precision MFU is measured at
    peak: Peak                 # of ONE device at dtype
    compute_capability: float | None = None

    @property
    def label(self) -> str:
        return f"{self.count} x {self.name}" if self.count > 1 else self.name

    @property
    def job_peak_tflops(self) -> float | None:
        """All the job's devices together: what whole-job FLOP/s are divided by."""
        return self.peak.tflops * self.count if self.peak.tflops else None


def capability(gpu: dict) -> float | None:
    try:
        return float(gpu.get("compute_capability"))
    except (TypeError, ValueError):
        return None


def peak_of(kind: str, name: str, cpu: dict, dtype: str, override) -> Peak:
    try:
        chosen = override_peak(override, dtype)
    except ValueError as exc:
        return Peak(None, str(exc))
    if chosen is not None:
        return chosen
    return gpu_peak(name, dtype) if kind == "cuda" else cpu_peak(cpu, dtype)


def plan_device(facts: dict, args: list, nproc: int, override=None) -> RunDevice:
    """Pure: the run's device from the agent's device facts, the script's arguments and the process count."""
    gpus = facts.get("gpus") or []
    cpu = facts.get("cpu") or {}
    kind = nanogpt_device(args, host_has_cuda=bool(gpus))
    if kind == "cuda" and gpus:
        gpu = gpus[0]
        cc = capability(gpu)
        dtype = nanogpt_dtype(args, "cuda", bf16_supported=cc is not None and cc >= 8.0, compute_capability=cc)
        return RunDevice("cuda", gpu["name"], max(1, min(nproc, len(gpus))), dtype,
                         peak_of("cuda", gpu["name"], cpu, dtype, override), cc)
    dtype = nanogpt_dtype(args, "cpu", bf16_supported=False)
    name = cpu.get("model") or "CPU"
    return RunDevice("cpu", name, 1, dtype, peak_of("cpu", name, cpu, dtype, override))


def with_dtype(device: RunDevice, dtype: str, facts: dict, override=None) -> RunDevice:
    """The same device measured at another precision (the script's metrics said which it used)."""
    return replace(device, dtype=dtype, peak=peak_of(device.kind, device.name, facts.get("cpu") or {}, dtype, override))


def measured_ceiling(ceiling: dict, kind: str, dtype: str) -> float | None:
    """One device's matmul TFLOPS from `hosts check --bench`, at the precision that stands for dtype; None when
    it was measured on another kind of device (a CPU ceiling says nothing of a GPU run)."""
    if not ceiling or ceiling.get("device") != kind:
        return None
    return ceiling.get("bf16" if dtype == "bf16" else "fp32")


def with_ceiling(device: RunDevice, ceiling: dict) -> RunDevice:
    """The device, its peak raised to the measured ceiling where that is higher: a peak the device beats
    (a CPU's turbo clock above the one `cpu MHz` gave) would put MFU over 100%."""
    measured = measured_ceiling(ceiling, device.kind, device.dtype)
    if not measured or not device.peak.tflops or measured <= device.peak.tflops:
        return device
    source = (f"measured matmul ceiling (offload hosts check --bench), above the {device.peak.tflops:.3g} TFLOPS "
              f"of {device.peak.source}: the device beats that figure, so the higher one is used")
    return replace(device, peak=Peak(measured, source))
