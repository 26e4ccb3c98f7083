"""What command starts the job: plain python for one process, torchrun for several."""
from __future__ import annotations


def plan_launch(python: str, script: str, args: list, nproc_per_node: int) -> list:
    """argv for the job. One process runs as nanoGPT's README runs one GPU; more go through torchrun."""
    if nproc_per_node > 1:
        return [python, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc_per_node}", script, *args]
    return [python, script, *args]


def job_env(host_env: dict, run_id: str) -> dict:
    """The host's `env` from hosts.yaml, plus what every job gets."""
    return {**host_env, "OFFLOAD_RUN_ID": run_id, "PYTHONUNBUFFERED": "1"}
