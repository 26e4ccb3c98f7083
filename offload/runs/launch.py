"""What command starts the job: plain python for one process, torchrun for several, on one node or many."""
from __future__ import annotations

import re

from offload.config.hosts import first_bad_env
from offload.errors import OffloadError

MODULE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")  # what `python -m` can import


def plan_launch(python: str, script: str, args: list, nproc_per_node: int, module: bool = False) -> list:
    """argv for the job. One process runs as nanoGPT's README runs one GPU; more go through torchrun.
    torchrun's argparse drops a `--` that comes first after the script; one `--` before the script ends
    torchrun's own options there, so every argument after it reaches the script as given. A module runs as
    `python -m` runs it (torchrun's --module)."""
    if nproc_per_node > 1:
        return [python, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc_per_node}", *(["--module"] if module else []), "--", script, *args]
    return [python, *(["-m"] if module else []), script, *args]


def plan_node_launch(python: str, script: str, args: list, nproc_per_node: int, nnodes: int, node_rank: int,
                     endpoint: str, run_id: str, local_addr: str, module: bool = False) -> list:
    """argv for node `node_rank` of a multi-node job: torchrun with c10d rendezvous at node 0's endpoint.
    torchrun guesses both which node serves the rendezvous store and the address the other nodes reach this
    one at from the machine's hostname, which misses the address of a second interface (the usual case on a
    cluster network): is_host and --local_addr say them outright, from hosts.yaml."""
    return [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--node_rank={node_rank}",
            f"--nproc_per_node={nproc_per_node}", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
            f"--rdzv_id={run_id}", f"--rdzv_conf=is_host={1 if node_rank == 0 else 0}", f"--local_addr={local_addr}",
            *(["--module"] if module else []), "--", script, *args]  # `--`: as in plan_launch


def cpu_processes_warning(where: str, facts: dict, nproc_per_node: int) -> str | None:
    """Several processes on a host with no GPU: torchrun starts them all the same, each on the CPU."""
    if nproc_per_node <= 1 or facts.get("gpus"):
        return None
    return (f"{where} has no GPU: torchrun will run {nproc_per_node} processes on its CPU, and a script "
            "hard-wired to CUDA (`.cuda()`, device='cuda', backend='nccl') fails there")


def job_env(host_env: dict, run_id: str, run_env: dict | None = None, device=None) -> dict:
    """The host's `env` from hosts.yaml, the run's own --env over it, plus what every job gets (and, from the
    agent, the project's root first on PYTHONPATH: start_request's python_path). device (mfu.device.RunDevice):
    its peak goes to the job as OFFLOAD_PEAK_TFLOPS, one device's (a script's own MFU is per process), with the
    precision it is for as OFFLOAD_PEAK_DTYPE, so a script prints its MFU against this device, not an A100."""
    peak = {"OFFLOAD_PEAK_TFLOPS": f"{device.peak.tflops:.6g}", "OFFLOAD_PEAK_DTYPE": device.dtype} \
        if device is not None and device.peak.tflops else {}
    return {**peak, **host_env, **(run_env or {}), "OFFLOAD_RUN_ID": run_id, "PYTHONUNBUFFERED": "1"}


def env_assignments(assignments: list) -> dict:
    """--env KEY=VALUE flags as a mapping, each checked as hosts.yaml's env is (the last of a KEY wins)."""
    env = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals:
            raise OffloadError(f"--env {assignment!r} is not KEY=VALUE", hint=f"write it as --env {name or 'KEY'}=VALUE")
        problem = first_bad_env({name: value})
        if problem:
            raise OffloadError(f"--env: {problem[1]}")
        env[name] = value
    return env


def module_name(module: str) -> str:
    """-m's SCRIPT, refused at once unless it is a dotted name `python -m` could import."""
    if not MODULE_PATTERN.fullmatch(module):
        raise OffloadError(f"-m {module!r} is not a module name",
                           hint="give a dotted name such as pkg.train (without .py), or drop -m to run a script file")
    return module


def node_address(target) -> str:
    """How the other nodes reach this one: hosts.yaml's rdzv_host, else the address the laptop uses."""
    return target.rdzv_host or target.hostname


def device_name(facts: dict) -> str:
    gpus = facts.get("gpus") or []
    return f"{len(gpus)} x {gpus[0]['name']}" if gpus else (facts.get("cpu") or {}).get("model") or "CPU"
