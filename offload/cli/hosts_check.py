"""`offload hosts check`: reach each host, start its agent, ask for its facts, and say them: a table row per host
where the table fits the terminal, otherwise a stacked block per host (label, value) that fits 80 columns."""
from __future__ import annotations

from rich.measure import Measurement
from rich.table import Table

from offload.config import hosts, hoststate
from offload.config.hoststate import LOCAL
from offload.config.local_target import LocalTarget
from offload.config.resolve import resolve
from offload.config.ssh_config import describe_reader
from offload.console import add_plain_row, human_size, say, table_console
from offload.errors import AuthFailed, HostKeyError, HostUnreachable, LinkLost, OffloadError, RemoteError
from offload.mfu.device import peak_of
from offload.runs.logout_survival import COLUMN as LOGOUT, describe as describe_logout
from offload.transport import agent as agents
from offload.transport.link import ask_to_trust
from offload.transport.links import open_link

INDEX = "content index"  # what the host keeps of offload's files there, so their content is never sent again
COLUMNS = ("host", "reachable", "auth", "python", "torch", "cuda", "gpus", "cpu", "peak TFLOPS", "free disk", INDEX,
           LOGOUT)
MEASURED = "measured TFLOPS"  # the extra column of `hosts check --bench`
WIDE_FROM = 160  # columns: below that, a dozen columns side by side are too narrow to read, so each host is stacked
FLAGS = "cpu flags"  # the extra column of `hosts check --verbose`: the ISA flags the CPU peak is reckoned from


def describe_gpus(facts: dict) -> str:
    """nvidia-smi's GPUs, else torch's, as 'name (N GiB)'; a card sold as 12 GB reports 12282 MiB: 12, not 11."""
    gpus = facts.get("gpus") or (facts.get("torch") or {}).get("devices") or []
    if not gpus:
        return "none (cpu)"
    return ", ".join(f"{g['name']} ({round(g['memory_mib'] / 1024) if g.get('memory_mib') else '?'} GiB)" for g in gpus)


def describe_cpu(cpu: dict) -> str:
    """'AMD EPYC: 2 cores, 1 socket, 2.60 GHz' (its ISA flags are describe_flags, shown with --verbose)."""
    if not cpu:
        return "?"
    clock = f", {cpu['max_mhz'] / 1000:.2f} GHz" if cpu.get("max_mhz") else ""
    sockets = cpu.get("sockets") or 1
    return f"{cpu.get('model', '?')}: {cpu.get('physical_cores', '?')} cores, {sockets} socket{'s' if sockets > 1 else ''}{clock}"


def describe_flags(cpu: dict) -> str:
    """'avx2 avx512f fma'."""
    return " ".join(cpu.get("flags") or []) or "no vector flags"


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
    gpus = facts.get("gpus") or []
    kind, name = ("cuda", gpus[0]["name"]) if gpus else ("cpu", (facts.get("cpu") or {}).get("model", "CPU"))
    shown = []
    for dtype in ("bf16", "fp32") if gpus else ("fp32", "bf16"):
        peak = peak_of(kind, name, facts.get("cpu") or {}, dtype, override)
        if peak.tflops is None:
            return f"n/a ({peak.source})"
        shown.append(f"{dtype} {peak.tflops:.3g}")
    return ", ".join(shown)


def check_target(target, timeout: float, confirm, bench_seconds: float | None = None, verbose: bool = False) -> dict:
    """One row of `hosts check` (this machine's too: config.local_target.LocalTarget, through the local agent a
    fallback run uses): every column filled, failures described rather than raised."""
    row = dict.fromkeys(COLUMNS + ((MEASURED,) if bench_seconds else ()) + ((FLAGS,) if verbose else ()), "")
    row["host"] = f"{target.name} ({target.address or 'this machine'})"
    try:
        with open_link(target, timeout, confirm) as link:
            row["reachable"], row["auth"] = "yes", "ok" if target.address else "-"
            fill_from_agent(row, link.agent, target, bench_seconds)
    except HostUnreachable as exc:
        row["reachable"] = f"no: {exc.reason}"
    except (AuthFailed, HostKeyError) as exc:
        row["reachable"], row["auth"] = "yes", f"failed: {exc.message}"
    except (RemoteError, LinkLost) as exc:  # connected and logged in; the agent could not start
        row["reachable"], row["auth"], row["python"] = "yes", "ok", f"failed: {exc.message}"
    except OffloadError as exc:  # e.g. an unreadable identity file: this host's row fails, not the whole table
        row["auth"] = f"failed: {exc.message}"
    return row


def fill_from_agent(row: dict, agent, target, bench_seconds: float | None) -> None:
    name, workdir = target.name, target.workdir
    try:
        facts = agent.request("facts", timeout=agents.FACTS_TIMEOUT_S, workdir=workdir)
        measured = agent.request("bench", timeout=bench_seconds + agents.FACTS_TIMEOUT_S,
                                 seconds=bench_seconds) if bench_seconds else None
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
    if FLAGS in row:
        row[FLAGS] = describe_flags(facts.get("cpu") or {})
    row["peak TFLOPS"] = describe_peaks(facts, target.peak_tflops)
    free = facts.get("workdir_free_bytes")
    row["free disk"] = f"{'?' if free is None else human_size(free)} in {workdir}"
    row[INDEX] = describe_index(facts.get("content_index"))
    row[LOGOUT] = describe_logout(facts)
    if measured is not None:
        row[MEASURED] = describe_measured(measured)
        if "error" not in measured:
            hoststate.remember(name, ceiling={k: v for k, v in measured.items() if k != "t"})


def describe_index(index: dict | None) -> str:
    """`12 files, 1.4 GB in 3 projects`: the files of the workdir a sync can build new paths from."""
    if not index:
        return "-"
    files, projects = index["files"], index["projects"]
    return (f"{files} file{'' if files == 1 else 's'}, {human_size(index['bytes'])} in {projects} "
            f"project{'' if projects == 1 else 's'}")


def describe_measured(measured: dict) -> str:
    if "error" in measured:
        return f"failed: {measured['error']}"
    return ", ".join(f"{dtype} {measured[dtype]:.3g}" for dtype in ("bf16", "fp32") if measured.get(dtype))


def healthy(row: dict) -> bool:
    return row["auth"] in ("ok", "-") and not row["python"].startswith("failed") and not row["torch"].startswith("missing")


def check_hosts(name: str | None, timeout: float, bench_seconds: float | None = None, verbose: bool = False) -> int:
    """One row per host (`local` is this machine); with bench_seconds, the measured matmul ceiling too, kept;
    with verbose, the CPU's ISA flags."""
    registry = hosts.load()
    names = [name] if name else list(registry.hosts)
    if not names:
        raise OffloadError("no hosts registered", hint=f"offload hosts add NAME [user@]hostname, or `offload hosts check {LOCAL}`")
    targets = [LocalTarget() if n == LOCAL and n not in registry.hosts else resolve(n, registry.get(n)) for n in names]
    if any(target.address for target in targets):
        say(f"ssh config: {describe_reader()}")
    if bench_seconds:
        say(f"measuring each host's matmul ceiling, about {bench_seconds:g} s each")
    rows = [check_target(target, timeout, ask_to_trust, bench_seconds, verbose) for target in targets]
    print_rows(rows, table_console())
    return 0 if all(healthy(r) for r in rows) else 1


def print_rows(rows: list, console) -> None:
    """The wide table on a wide console, when no cell must be cut mid-word; otherwise each host stacked, one
    label and its value a line."""
    columns = list(rows[0])
    table = Table(*columns)
    for row in rows:
        add_plain_row(table, *(row[c] for c in columns))
    unbounded = Measurement.get(console, console.options.update_width(1 << 20), table)
    if console.width >= WIDE_FROM and unbounded.minimum <= console.width:
        console.print(table)
        return
    for index, row in enumerate(rows):
        if index:
            console.print()
        stacked = Table(show_header=False, box=None, padding=(0, 1), pad_edge=False)
        stacked.add_column(no_wrap=True)
        stacked.add_column(overflow="fold")  # a path longer than the line folds, never cut off
        for column in columns:
            add_plain_row(stacked, column, row[column])
        console.print(stacked)
