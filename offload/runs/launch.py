"""What command starts the job: plain python for one process, torchrun for several, on one node or many."""
from __future__ import annotations


def plan_launch(python: str, script: str, args: list, nproc_per_node: int) -> list:
    """argv for the job. One process runs as nanoGPT's README runs one GPU; more go through torchrun.
    torchrun's argparse drops a `--` that comes first after the script; one `--` before the script ends
    torchrun's own options there, so every argument after it reaches the script as given."""
    if nproc_per_node > 1:
        return [python, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc_per_node}", "--", script, *args]
    return [python, script, *args]


def plan_node_launch(python: str, script: str, args: list, nproc_per_node: int, nnodes: int, node_rank: int,
                     endpoint: str, run_id: str, local_addr: str) -> list:
    """argv for node `node_rank` of a multi-node job: torchrun with c10d rendezvous at node 0's endpoint.
    torchrun guesses both which node serves the rendezvous store and the address the other nodes reach this
    one at from the machine's hostname, which misses the address of a second interface (the usual case on a
    cluster network): is_host and --local_addr say them outright, from hosts.yaml."""
    return [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--node_rank={node_rank}",
            f"--nproc_per_node={nproc_per_node}", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
            f"--rdzv_id={run_id}", f"--rdzv_conf=is_host={1 if node_rank == 0 else 0}", f"--local_addr={local_addr}",
            "--", script, *args]  # `--`: as in plan_launch


def cpu_processes_warning(where: str, facts: dict, nproc_per_node: int) -> str | None:
    """Several processes on a host with no GPU: torchrun starts them all the same, each on the CPU."""
    if nproc_per_node <= 1 or facts.get("gpus"):
        return None
    return (f"{where} has no GPU: torchrun will run {nproc_per_node} processes on its CPU, and a script "
            "hard-wired to CUDA (`.cuda()`, device='cuda', backend='nccl') fails there")


def job_env(host_env: dict, run_id: str) -> dict:
    """The host's `env` from hosts.yaml, plus what every job gets (and, from the agent, the project's root first on
    PYTHONPATH: start_request's python_path)."""
    return {**host_env, "OFFLOAD_RUN_ID": run_id, "PYTHONUNBUFFERED": "1"}


def node_address(target) -> str:
    """How the other nodes reach this one: hosts.yaml's rdzv_host, else the address the laptop uses."""
    return target.rdzv_host or target.hostname


def device_name(facts: dict) -> str:
    gpus = facts.get("gpus") or []
    return f"{len(gpus)} x {gpus[0]['name']}" if gpus else (facts.get("cpu") or {}).get("model") or "CPU"
