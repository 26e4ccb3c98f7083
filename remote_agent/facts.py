"""What the host is: its Python, torch, GPUs and disk. Cheap facts go in the hello; the rest on request."""
from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import socket
import subprocess
import sys

from . import logind
from .probe import run_json

NVIDIA_SMI_QUERY = "name,memory.total,driver_version,compute_cap"
NVIDIA_SMI_OLD_QUERY = "name,memory.total,driver_version"  # drivers before 510 reject compute_cap
PROBE_TIMEOUT_S = 120  # the first `import torch` on a cold disk can be slow


def python_env() -> str:
    """'venv', 'conda' or 'system': which kind of environment the interpreter belongs to."""
    if os.path.isdir(os.path.join(sys.prefix, "conda-meta")):
        return "conda"
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return "venv"
    return "system"


def hello() -> dict:
    return {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "python_env": python_env(),
        "has_torch": importlib.util.find_spec("torch") is not None,
        "hostname": socket.gethostname(),
        "home": os.path.expanduser("~"),  # with machine_id: the host account, whose GPU lock is one (hostlock.py)
        "machine_id": (read_text("/etc/machine-id") or "").strip() or None,
        "pid": os.getpid(),
    }


def parse_nvidia_smi_csv(text: str, query: str = NVIDIA_SMI_QUERY) -> list:
    """GPUs from `nvidia-smi --query-gpu=QUERY --format=csv[,noheader][,nounits]`.

    A header line names the columns (so any order reads); without one, `query` gives their order.
    "24576 MiB" and "24576" are both read; "[N/A]" and the like mean unknown. Other lines are noise.
    """
    columns = query.split(",")
    gpus = []
    for line in text.splitlines():
        if is_csv_header(line):
            columns = [re.sub(r" \[.*\]$", "", field.strip()) for field in line.split(",")]
            continue
        values = [value.strip() for value in line.split(",")]
        row = {column: (None if value.startswith("[") else value) for column, value in zip(columns, values)}
        if len(values) != len(columns) or not row.get("name"):
            continue
        memory = (row.get("memory.total") or "").split(" ")[0]
        gpus.append({
            "name": row["name"],
            "memory_mib": int(memory) if memory.isdigit() else None,
            "driver": row.get("driver_version"),
            "compute_capability": row.get("compute_cap") or None,
        })
    return gpus


def is_csv_header(line: str) -> bool:
    """'name, memory.total [MiB], ...': field names in lower case, units in brackets."""
    return all(re.fullmatch(r"[a-z_.]+( \[.+\])?", field.strip()) for field in line.split(","))


def nvidia_gpus() -> list | None:
    """GPUs as nvidia-smi reports them; None where there is no nvidia-smi or it fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    for query in (NVIDIA_SMI_QUERY, NVIDIA_SMI_OLD_QUERY):
        try:
            done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0:
            return parse_nvidia_smi_csv(done.stdout, query)
    return None


COMPUTE_APPS_QUERY = "pid,process_name,used_memory"
COLUMN_ALIASES = {"name": "process_name", "used_gpu_memory": "used_memory"}  # the header prints the long names
RUN_ID_VARIABLE = b"OFFLOAD_RUN_ID="  # set in every job offload starts (offload/launch.py)


def parse_compute_apps(text: str, query: str = COMPUTE_APPS_QUERY) -> list:
    """Processes on the GPUs from `nvidia-smi --query-compute-apps=QUERY --format=csv[,noheader][,nounits]`:
    [{pid, name, used_memory_mib}], in nvidia-smi's order.

    A header line names the columns (so any order and extra columns read); without one, `query` gives them.
    "6265 MiB" and "6265" both read; "[N/A]" (Windows under WDDM) and "[Not Found]" (a process in another
    container) mean unknown. A process name with commas in it is put back together; other lines are noise.
    """
    columns = [COLUMN_ALIASES.get(c.strip(), c.strip()) for c in query.split(",")]
    apps = []
    for line in text.splitlines():
        if is_csv_header(line):
            columns = [COLUMN_ALIASES.get(c, c) for c in
                       (re.sub(r" \[.*\]$", "", field.strip()) for field in line.split(","))]
            continue
        values = [value.strip() for value in line.split(",")]
        extra = len(values) - len(columns)
        if extra > 0 and "process_name" in columns:
            at = columns.index("process_name")
            values[at:at + extra + 1] = [",".join(values[at:at + extra + 1])]
        row = {column: (None if value.startswith("[") else value) for column, value in zip(columns, values)}
        if len(values) != len(columns) or not (row.get("pid") or "").isdigit():
            continue
        memory = (row.get("used_memory") or "").split(" ")[0]
        apps.append({"pid": int(row["pid"]), "name": row.get("process_name"),
                     "used_memory_mib": int(memory) if memory.isdigit() else None})
    return apps


def compute_apps() -> list | None:
    """What runs on the GPUs now, each with the offload run it belongs to (None: not one of this user's runs);
    None where there is no nvidia-smi or it fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", f"--query-compute-apps={COMPUTE_APPS_QUERY}",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [{**app, "offload_run": offload_run_of(app["pid"])} for app in parse_compute_apps(done.stdout)]


def offload_run_of(pid: int) -> str | None:
    """The OFFLOAD_RUN_ID a process was started with; readable only for our own user's processes. (nvidia-smi
    in a container can name pids of the host's namespace: those are not found here, so they read as None.)"""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(RUN_ID_VARIABLE):
            return entry[len(RUN_ID_VARIABLE):].decode(errors="replace")
    return None


def torch_facts() -> dict:
    """torch's view of the host, from a subprocess so a broken torch cannot take the agent down."""
    return run_json("remote_agent.torch_probe", timeout=PROBE_TIMEOUT_S, what="import torch")


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


def device_facts(workdir: str | None = None) -> dict:
    """What the job will compute on, cheaply (no torch import), and whether it outlives a logout (logind.py):
    asked for at the start of every run."""
    return {"gpus": nvidia_gpus(), "cpu": cpu_facts(), "compute_apps": compute_apps(),
            "logout_survival": logind.logout_survival()}


def free_bytes(path: str) -> int | None:
    """Free space where `path` is (or would be created)."""
    path = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def collect(workdir: str) -> dict:
    return {
        **hello(),
        "torch": torch_facts(),
        "gpus": nvidia_gpus(),
        "cpu": cpu_facts(),
        "workdir_free_bytes": free_bytes(workdir),
        "logout_survival": logind.logout_survival(),
    }
