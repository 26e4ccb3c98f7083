"""What the host is: its Python, torch, GPUs and disk (its CPU: cpu.py). Cheap facts go in the hello; the rest on
request."""
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
from .cpu import cpu_facts, read_text
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
    gpus = []
    for row in csv_rows(text, query):
        if not row.get("name"):
            continue
        memory = (row.get("memory.total") or "").split(" ")[0]
        gpus.append({
            "name": row["name"],
            "memory_mib": int(memory) if memory.isdigit() else None,
            "driver": row.get("driver_version"),
            "compute_capability": row.get("compute_cap") or None,
        })
    return gpus


def csv_rows(text: str, query: str) -> list:
    """{column: value} of each line of `nvidia-smi --query-...=QUERY --format=csv[,noheader][,nounits]` with as many
    values as columns: a header line names the columns (so any order reads), else `query` gives their order;
    "[N/A]" and the like are None. Other lines (noise, errors) are left out."""
    columns, rows = query.split(","), []
    for line in text.splitlines():
        if is_csv_header(line):
            columns = [re.sub(r" \[.*\]$", "", field.strip()) for field in line.split(",")]
            continue
        values = [value.strip() for value in line.split(",")]
        if len(values) == len(columns):
            rows.append({column: (None if value.startswith("[") else value) for column, value in zip(columns, values)})
    return rows


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
RUN_ID_VARIABLE = b"OFFLOAD_RUN_ID="  # set in every job offload starts (offload/runs/launch.py)


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
