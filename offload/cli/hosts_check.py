"""`offload hosts check` and the probe behind `hosts add`: connect, start the agent, ask for facts."""
from __future__ import annotations

from offload.transport import agent as agents
from offload.transport import ssh
from offload.errors import AuthFailed, HostKeyError, HostUnreachable, OffloadError
from offload.console import human_size
from offload.runs.logout_survival import COLUMN as LOGOUT, describe as describe_logout

COLUMNS = ("host", "reachable", "auth", "python", "torch", "cuda", "gpus", "cpu", "peak TFLOPS", "free disk", LOGOUT)
MEASURED = "measured TFLOPS"  # the extra column of `hosts check --bench`


def describe_gpus(facts: dict) -> str:
    """nvidia-smi's GPUs, else torch's, as 'name (N GiB)'; a card sold as 12 GB reports 12282 MiB: 12, not 11."""
    gpus = facts.get("gpus") or (facts.get("torch") or {}).get("devices") or []
    if not gpus:
        return "none (cpu)"
    return ", ".join(f"{g['name']} ({round(g['memory_mib'] / 1024) if g.get('memory_mib') else '?'} GiB)" for g in gpus)


def describe_cpu(cpu: dict) -> str:
    """'AMD EPYC: 2 cores, 1 socket, 2.60 GHz; avx2 avx512f fma'."""
    if not cpu:
        return "?"
    clock = f", {cpu['max_mhz'] / 1000:.2f} GHz" if cpu.get("max_mhz") else ""
    sockets = cpu.get("sockets") or 1
    return (f"{cpu.get('model', '?')}: {cpu.get('physical_cores', '?')} cores, {sockets} socket{'s' if sockets > 1 else ''}"
            f"{clock}; {' '.join(cpu.get('flags') or []) or 'no vector flags'}")


def describe_cuda(facts: dict) -> str:
    torch = facts.get("torch") or {}
    if not torch.get("cuda_available"):
        return "no"
    first = (facts.get("gpus") or [{}])[0]
    details = ", ".join(part for part in (f"driver {first['driver']}" if first.get("driver") else "",
                                          f"cc {first['compute_capability']}" if first.get("compute_capability") else "") if part)
    return " ".join(part for part in ("yes", torch.get("cuda_version") or "", f"({details})" if details else "") if part)


def describe_peaks(facts: dict, override) -> str:
    """The dense peak of one of the host's devices at the precisions training uses there."""
    from offload.mfu.device import peak_of

    gpus = facts.get("gpus") or []
    kind, name = ("cuda", gpus[0]["name"]) if gpus else ("cpu", (facts.get("cpu") or {}).get("model", "CPU"))
    shown = []
    for dtype in ("bf16", "fp32") if gpus else ("fp32", "bf16"):
        peak = peak_of(kind, name, facts.get("cpu") or {}, dtype, override)
        if peak.tflops is None:
            return f"n/a ({peak.source})"
        shown.append(f"{dtype} {peak.tflops:.3g}")
    return ", ".join(shown)


def check_host(target, timeout: float, confirm, bench_seconds: float | None = None) -> dict:
    """One row of `hosts check`: every column filled, failures described rather than raised."""
    row = dict.fromkeys(COLUMNS + ((MEASURED,) if bench_seconds else ()), "")
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
        fill_from_agent(row, lambda: agents.start_remote(client, target), target.name, target.workdir,
                        target.peak_tflops, bench_seconds)
    finally:
        client.close()
    return row


def check_local(bench_seconds: float | None = None) -> dict:
    """The same row for this machine, through the local agent (what a fallback run uses)."""
    from offload.config.hoststate import LOCAL

    row = dict.fromkeys(COLUMNS + ((MEASURED,) if bench_seconds else ()), "")
    row.update(host=f"{LOCAL} (this machine)", reachable="yes", auth="-")
    fill_from_agent(row, agents.start_local, LOCAL, "~", None, bench_seconds)
    return row


def fill_from_agent(row: dict, start_agent, name: str, workdir: str, override, bench_seconds: float | None) -> None:
    from offload.config import hoststate

    try:
        agent = start_agent()
        try:
            facts = agent.request("facts", timeout=agents.FACTS_TIMEOUT_S, workdir=workdir)
            measured = agent.request("bench", timeout=bench_seconds + agents.FACTS_TIMEOUT_S,
                                     seconds=bench_seconds) if bench_seconds else None
        finally:
            agent.close()
    except OffloadError as exc:
        row["python"] = f"failed: {exc.message}"
        return
    hoststate.remember(name, device={"gpus": facts.get("gpus"), "cpu": facts.get("cpu")})
    torch = facts.get("torch") or {}
    row["python"] = f"{facts['python_version']} ({facts['python_env']}) {facts['python']}"
    row["torch"] = torch.get("version") or f"missing: {torch.get('error', 'not installed')}"
    row["cuda"] = describe_cuda(facts)
    row["gpus"] = describe_gpus(facts)
    row["cpu"] = describe_cpu(facts.get("cpu") or {})
    row["peak TFLOPS"] = describe_peaks(facts, override)
    free = facts.get("workdir_free_bytes")
    row["free disk"] = f"{'?' if free is None else human_size(free)} in {workdir}"
    row[LOGOUT] = describe_logout(facts)
    if measured is not None:
        row[MEASURED] = describe_measured(measured)
        if "error" not in measured:
            hoststate.remember(name, ceiling={k: v for k, v in measured.items() if k != "t"})


def describe_measured(measured: dict) -> str:
    if "error" in measured:
        return f"failed: {measured['error']}"
    return ", ".join(f"{dtype} {measured[dtype]:.3g}" for dtype in ("bf16", "fp32") if measured.get(dtype))


def healthy(row: dict) -> bool:
    return row["auth"] in ("ok", "-") and not row["python"].startswith("failed") and not row["torch"].startswith("missing")
