"""`offload hosts check` and the probe behind `hosts add`: connect, start the agent, ask for facts."""
from __future__ import annotations

from . import agent as agents
from . import ssh
from .errors import AuthFailed, HostKeyError, HostUnreachable, OffloadError

COLUMNS = ("host", "reachable", "auth", "python", "torch", "cuda", "gpus", "free disk")


def human_bytes(count: int | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000


def describe_gpus(facts: dict) -> str:
    """nvidia-smi's GPUs, else torch's, as 'name (N GiB)'; a card sold as 12 GB reports 12282 MiB: 12, not 11."""
    gpus = facts.get("gpus") or (facts.get("torch") or {}).get("devices") or []
    if not gpus:
        return "none (cpu)"
    return ", ".join(f"{g['name']} ({round(g['memory_mib'] / 1024) if g.get('memory_mib') else '?'} GiB)" for g in gpus)


def check_host(target, timeout: float, confirm) -> dict:
    """One row of `hosts check`: every column filled, failures described rather than raised."""
    row = dict.fromkeys(COLUMNS, "")
    row["host"] = f"{target.name} ({target.address})"
    try:
        client = ssh.connect(target, timeout, confirm=confirm)
    except HostUnreachable as exc:
        row["reachable"] = f"no: {exc.reason}"
        return row
    except (AuthFailed, HostKeyError) as exc:
        row["reachable"], row["auth"] = "yes", f"failed: {exc.message}"
        return row
    except OffloadError as exc:  # e.g. an unreadable identity file: this host's row fails, not the whole table
        row["auth"] = f"failed: {exc.message}"
        return row
    row["reachable"], row["auth"] = "yes", "ok"
    try:
        agent = agents.start_remote(client, target)
        try:
            facts = agent.request("facts", timeout=agents.FACTS_TIMEOUT_S, workdir=target.workdir)
        finally:
            agent.close()
    except OffloadError as exc:
        row["python"] = f"failed: {exc.message}"
        return row
    finally:
        client.close()
    torch = facts.get("torch") or {}
    row["python"] = f"{facts['python_version']} ({facts['python_env']}) {facts['python']}"
    row["torch"] = torch.get("version") or f"missing: {torch.get('error', 'not installed')}"
    row["cuda"] = ("yes " + (torch.get("cuda_version") or "")).strip() if torch.get("cuda_available") else "no"
    row["gpus"] = describe_gpus(facts)
    row["free disk"] = f"{human_bytes(facts.get('workdir_free_bytes'))} in {target.workdir}"
    return row


def healthy(row: dict) -> bool:
    return row["auth"] == "ok" and not row["python"].startswith("failed") and not row["torch"].startswith("missing")
