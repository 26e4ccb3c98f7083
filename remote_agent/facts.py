"""What the host is: its Python, torch, GPUs and disk. Cheap facts go in the hello; the rest on request."""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys

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
        "home": os.path.expanduser("~"),
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


def torch_facts() -> dict:
    """torch's view of the host, from a subprocess so a broken torch cannot take the agent down."""
    agent_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        done = subprocess.run([sys.executable, "-m", "remote_agent.torch_probe"], cwd=agent_root,
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"import torch took over {PROBE_TIMEOUT_S} s"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        "cpu": {"model": cpu_model(), "logical_cores": os.cpu_count()},
        "workdir_free_bytes": free_bytes(workdir),
    }
