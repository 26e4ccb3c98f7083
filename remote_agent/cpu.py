"""The host's CPU, for its peak FLOPS on the laptop (offload/mfu/peaks.py): /proc/cpuinfo, `lscpu` and
cpufreq, each where it exists, merged into one description."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess

CPU_FLAGS = ("amx_bf16", "amx_tile", "avx", "avx2", "avx512_bf16", "avx512_fp16", "avx512f", "avx_vnni", "fma")
PROC_CPUINFO = "/proc/cpuinfo"
CPUFREQ_MAX = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"  # kHz, the rated maximum (turbo included)
LSCPU_TIMEOUT_S = 10


def parse_cpuinfo(text: str) -> dict:
    """/proc/cpuinfo: one block of 'key : value' lines per logical CPU, blocks apart by blank lines.

    physical_cores counts distinct (physical id, core id) pairs among the CPUs listed (None where the file has no
    such fields, as on ARM); max_mhz is the highest 'cpu MHz', a current clock rather than a rated maximum.
    """
    blocks, block = [], {}
    for line in text.splitlines() + [""]:
        key, sep, value = line.partition(":")
        if sep:
            block.setdefault(key.strip().lower(), value.strip())
        elif not line.strip() and block:
            blocks.append(block)
            block = {}
    cpus = [b for b in blocks if "processor" in b and ("vendor_id" in b or "model name" in b or "flags" in b)]
    cpus = cpus or [b for b in blocks if "processor" in b]
    first = cpus[0] if cpus else (blocks[0] if blocks else {})
    pairs = {(b["physical id"], b["core id"]) for b in cpus if "physical id" in b and "core id" in b}
    mhz = [m for m in (to_number(b.get("cpu mhz")) for b in cpus) if m]
    flags = first.get("flags")
    return {
        "model": first.get("model name"),
        "vendor": first.get("vendor_id"),
        "family": to_int(first.get("cpu family")),
        "model_number": to_int(first.get("model")),
        "logical_cores": len(cpus) or None,
        "physical_cores": len(pairs) or None,
        "sockets": len({b["physical id"] for b in cpus if "physical id" in b}) or None,
        "max_mhz": max(mhz) if mhz else None,
        "flags": None if flags is None else wanted_flags(flags),
    }


def parse_lscpu(text: str) -> dict:
    """`lscpu` in its default 'Key: value' form, old flat layout or new indented one, any locale ('3400,0000')."""
    fields, last = {}, None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            last = key.strip()
            fields.setdefault(last, value.strip())
        elif line.strip() and last == "Flags":  # a terminal-wrapped Flags line goes on without a key
            fields[last] += " " + line.strip()
    per_socket = to_int(fields.get("Core(s) per socket") or fields.get("Core(s) per cluster"))
    sockets = to_int(fields.get("Socket(s)")) or to_int(fields.get("Cluster(s)")) or (1 if per_socket else None)
    flags = fields.get("Flags")
    return {
        "model": fields.get("Model name"),
        "vendor": fields.get("Vendor ID"),
        "family": to_int(fields.get("CPU family")),
        "model_number": to_int(fields.get("Model")),
        "logical_cores": to_int(fields.get("CPU(s)")),
        "physical_cores": per_socket * sockets if per_socket and sockets else None,
        "sockets": sockets,
        "max_mhz": to_number(fields.get("CPU max MHz")),
        "flags": None if flags is None else wanted_flags(flags),
    }


def merge_cpu_facts(cpuinfo: dict, lscpu: dict, cpufreq_max_khz: int | None, arch: str,
                    logical_cores: int | None) -> dict:
    """One CPU description from what each source said; the clock from the best source that has one."""
    def first(key):
        return next((source[key] for source in (cpuinfo, lscpu) if source.get(key) is not None), None)

    if cpufreq_max_khz:
        max_mhz, mhz_source = cpufreq_max_khz / 1000, "cpufreq"
    elif lscpu.get("max_mhz"):
        max_mhz, mhz_source = lscpu["max_mhz"], "lscpu"
    elif cpuinfo.get("max_mhz"):
        max_mhz, mhz_source = cpuinfo["max_mhz"], "cpuinfo"
    else:
        max_mhz, mhz_source = None, None
    logical = first("logical_cores") or logical_cores
    return {
        "model": first("model") or arch,
        "vendor": first("vendor") or "",
        "family": first("family"),
        "model_number": first("model_number"),
        "logical_cores": logical,
        "physical_cores": first("physical_cores") or logical or 1,
        "sockets": first("sockets") or 1,
        "max_mhz": max_mhz,
        "mhz_source": mhz_source,
        "flags": first("flags") or [],
        "arch": arch,
    }


def cpu_facts() -> dict:
    """The host's CPU: /proc/cpuinfo, `lscpu` and cpufreq where each exists (see merge_cpu_facts)."""
    return merge_cpu_facts(parse_cpuinfo(read_text(PROC_CPUINFO) or ""), parse_lscpu(run_lscpu() or ""),
                           to_int(read_text(CPUFREQ_MAX)), platform.machine(), os.cpu_count())


def run_lscpu() -> str | None:
    if shutil.which("lscpu") is None:
        return None
    try:  # LC_ALL=C: a German locale would print 'CPU max MHz: 3400,0000' (parse_lscpu reads both)
        done = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=LSCPU_TIMEOUT_S,
                              env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def wanted_flags(flags: str) -> list:
    present = set(flags.split())
    return [flag for flag in CPU_FLAGS if flag in present]


def to_number(text: str | None) -> float | None:
    try:
        return float(text.replace(",", ".")) if text else None
    except ValueError:
        return None


def to_int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None
