"""Sync benchmark: `offload sync` against `rsync -a` and `tar c | ssh tar x` over one loopback OpenSSH.

    .venv/bin/python bench/bench_sync.py                 # every case, 5 runs each, a 1 GiB file
    .venv/bin/python bench/bench_sync.py --quick         # 3 runs each, a 256 MB file
    .venv/bin/python bench/bench_sync.py --cases small   # small | big | cli, comma-separated

Makes its own data in a temporary directory, starts its own sshd on 127.0.0.1 (the tests' fixture), and
prints for each case the median wall time of each tool, offload's ratio to rsync, the bytes each sent
over loopback, and the target with PASS or MISS. rsync gets offload's always-excluded directories and
the .gitignore rules; the generated data has neither, so all three tools copy the same files.

Bytes on the wire: the delta of /sys/class/net/lo/statistics/tx_bytes around one run. On loopback every
packet is counted once in tx (and again in rx), both directions of the connection included, with its
TCP/IP headers; anything else on the machine talking over loopback at the time is counted too.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from sshd_server import SshServer  # noqa: E402  (the tests' real-sshd fixture, reused)

from offload.sync.push import project_dir_name  # noqa: E402  (where offload puts a project in its workdir)
from link_memory import keeper_pid, peak_kib  # noqa: E402  (bench/ itself is on the path: this runs as a script)
from pipeline import start_pipeline  # noqa: E402
from small_files import make_small_files  # noqa: E402

ALWAYS_EXCLUDED = [".git/", "__pycache__/", ".venv/", "venv/", ".offload/"]  # offload/ignore.py's set
LO_TX_BYTES = Path("/sys/class/net/lo/statistics/tx_bytes")
SMALL_FILES = 10_000            # case 1-3 tree: this many files ...
SMALL_SIZES = (1024, 8 * 1024)  # ... each of a random size in this range (bytes), about 46 MB in all
SMALL_PER_DIR = 100             # files per directory, so no directory holds 10,000 entries
TOUCHED_FILES = 10              # case 3: files whose content changes between syncs
CHANGED_BYTES = 1 << 20         # case 5: bytes rewritten in the middle of the big file
CHUNK = 8 << 20                 # the big file is written this much at a time, never whole in memory
MIB = 1 << 20
# "offload cold": the same `offload sync` with no link keeper running (the first sync of a session pays
# Python's imports, the SSH handshake and the agent's start); "offload" finds the keeper the last one left.
TOOLS = ("offload cold", "offload", "rsync", "tar")  # the cold run leaves the keeper the warm one uses

# Targets from the issue: offload's time as a fraction of rsync's, CLI wall time, peak memory.
TARGET_RATIO = {"small first sync": 0.5, "small nothing changed": 0.5, "small 10 files touched": 0.5,
                "big first sync": 0.5, "big 1 MiB changed": 0.5, "big nothing changed": 0.3}
TARGET_BYTES_VS_RSYNC = {"big 1 MiB changed": 2.0}
TARGET_CLI_S = 0.3
TARGET_MAXRSS_MB = 200


@dataclass
class Run:
    seconds: float
    wire_bytes: int
    maxrss_kib: int  # of the first process of the run (offload itself; tar c in the tar pipeline)


@dataclass
class Row:
    case: str
    runs: dict = field(default_factory=dict)  # tool -> [Run]

    def median(self, tool: str, attribute: str) -> float | None:
        runs = self.runs.get(tool)
        return statistics.median(getattr(run, attribute) for run in runs) if runs else None


def run_measured(commands: list[list[str]], env: dict) -> Run:
    """Run commands as a pipeline (stdout of each into the next); wall time, loopback bytes, max RSS.
    Dirty pages are flushed first, so no tool pays for the writeback (or deletions) of the one before."""
    os.sync()
    tx_before = int(LO_TX_BYTES.read_text())
    started = time.perf_counter()
    processes = start_pipeline(commands, env, others_stderr=subprocess.DEVNULL)
    statuses = [os.wait4(process.pid, 0) for process in processes]
    seconds = time.perf_counter() - started
    wire_bytes = int(LO_TX_BYTES.read_text()) - tx_before
    for process, (_, status, _) in zip(processes, statuses):
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            sys.exit(f"bench: {process.args[:4]}... exited with {process.returncode}")
    return Run(seconds, wire_bytes, statuses[0][2].ru_maxrss)


class Tools:
    """The argv of each tool syncing a source directory into a named destination on the sshd."""

    def __init__(self, server: SshServer, scratch: Path):
        self.server, self.scratch = server, scratch
        self.home = scratch / "offload_home"
        self.home.mkdir()
        self.known_hosts = self.home / "known_hosts"
        self.known_hosts.write_text(server.known_hosts_line + "\n")
        self.env = {**os.environ, "OFFLOAD_HOME": str(self.home)}
        self.keeper_peak_kib = 0  # the keeper does the work of a warm `offload sync`: its memory counts
        # The ssh binary reads ~/.ssh of the passwd entry, not $HOME: every option is given here.
        self.ssh = ["ssh", "-p", str(server.port), "-i", str(server.client_key_path),
                    "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", f"{server.user}@{server.host}"]

    def destination(self, tool: str, name: str) -> Path:
        return self.scratch / "remote" / tool / name

    def register(self, workdir: Path) -> None:
        """Point offload's one host at workdir: a fresh workdir is a first sync for offload."""
        (self.home / "hosts.yaml").write_text(
            f"hosts:\n  bench:\n    hostname: {self.server.host}\n    port: {self.server.port}\n"
            f"    user: {self.server.user}\n    identity_file: {self.server.client_key_path}\n"
            f"    python: {sys.executable}\n    workdir: {workdir}\n")

    def commands(self, tool: str, source: Path, name: str) -> list[list[str]]:
        destination = self.destination(tool, name)
        if tool.startswith("offload"):
            self.register(destination)
            return [[sys.executable, "-m", "offload", "sync", "--project", str(source)]]
        if tool == "rsync":
            return [["rsync", "-a", "--mkpath", "--delete", "-e", " ".join(self.ssh[:-1]),
                     "--filter=:- .gitignore", *[f"--exclude={d}" for d in ALWAYS_EXCLUDED], f"{source}/",
                     f"{self.ssh[-1]}:{destination}/"]]
        return [["tar", "c", "-C", str(source), "."],
                [*self.ssh, f"mkdir -p {destination} && tar x -C {destination}"]]

    def sync(self, tool: str, source: Path, name: str) -> Run:
        if tool == "offload cold":
            self.disconnect()
        return run_measured(self.commands(tool, source, name), self.env)

    def disconnect(self) -> None:
        """Stop the link keeper (by the pid it wrote) and wait until it is gone; keep its peak RSS first."""
        self.keeper_peak_kib = max(self.keeper_peak_kib, keeper_peak_rss_kib(self.home))
        subprocess.run([sys.executable, "-m", "offload", "hosts", "disconnect"], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def check_copy(self, tool: str, source: Path, name: str) -> None:
        """Exit unless the destination holds every file of source, byte for byte (a fast wrong copy is no win)."""
        copy = self.destination(tool, name)
        copy = copy / project_dir_name(source) if tool.startswith("offload") else copy
        for path in (path for path in source.rglob("*") if path.is_file()):
            twin = copy / path.relative_to(source)
            if not (twin.is_file() and filecmp.cmp(path, twin, shallow=False)):
                sys.exit(f"bench: {tool} left {twin} missing or different from {path}")


def keeper_peak_rss_kib(offload_home: Path) -> int:
    """VmHWM (peak resident set) of the link keeper now running for offload_home, or 0."""
    pid = keeper_pid(offload_home / "keeper.pid")
    return peak_kib(pid) if pid else 0


def make_small_tree(root: Path) -> None:
    make_small_files(root, SMALL_FILES, SMALL_SIZES, SMALL_PER_DIR)


def touch_small_files(root: Path) -> None:
    """Rewrite TOUCHED_FILES files with new content of the same size (so also a new mtime)."""
    files = sorted(root.rglob("*.bin"))
    for path in random.sample(files, TOUCHED_FILES):
        path.write_bytes(os.urandom(path.stat().st_size))


def make_big_file(root: Path, size: int) -> None:
    root.mkdir(parents=True)
    with open(root / "big.bin", "wb") as file:
        for offset in range(0, size, CHUNK):
            file.write(os.urandom(min(CHUNK, size - offset)))


def change_big_middle(root: Path) -> None:
    path = root / "big.bin"
    with open(path, "r+b") as file:
        file.seek(max(0, path.stat().st_size // 2 - CHANGED_BYTES // 2))
        file.write(os.urandom(CHANGED_BYTES))


def sync_family(tools: Tools, label: str, source: Path, change, changed: str, order: list[str],
                repeat: int) -> list[Row]:
    """Rows 'first sync' (a fresh destination each time), 'nothing changed' and `changed` (after
    change(source)), in the given order; every tool syncs the same state of source in each repetition."""
    rows = []
    for kind in order:
        row = Row(f"{label} {kind}")
        for repetition in range(repeat):
            if kind == changed:
                change(source)
            for tool in TOOLS:
                name = f"first-{repetition}" if kind == "first sync" else "kept"
                row.runs.setdefault(tool, []).append(tools.sync(tool, source, name))
            if kind == "first sync":  # the last fresh copy becomes the kept one, the rest go
                for tool in TOOLS:  # after every tool ran: no run follows another tool's deletions
                    kept = tools.destination(tool, "kept")
                    shutil.rmtree(kept, ignore_errors=True)
                    tools.destination(tool, f"first-{repetition}").rename(kept)
                os.sync()
                time.sleep(2)  # ext4 with `discard` trims freed blocks after the commit: let that pass too
        for tool in TOOLS:
            tools.check_copy(tool, source, "kept")
        print(f"  done: {row.case}", file=sys.stderr)
        rows.append(row)
    return rows


def small_cases(tools: Tools, scratch: Path, repeat: int) -> list[Row]:
    source = scratch / "small"
    make_small_tree(source)
    touched = f"{TOUCHED_FILES} files touched"
    return sync_family(tools, "small", source, touch_small_files, touched,
                       ["first sync", "nothing changed", touched], repeat)


def big_cases(tools: Tools, scratch: Path, repeat: int, big_mb: int) -> list[Row]:
    source = scratch / "big"
    make_big_file(source, big_mb * MIB)
    changed = f"{CHANGED_BYTES // MIB} MiB changed"
    rows = sync_family(tools, "big", source, change_big_middle, changed,
                       ["first sync", changed, "nothing changed"], repeat)
    shutil.rmtree(source)
    return rows


def cli_cases(tools: Tools, repeat: int) -> list[Row]:
    offload = [sys.executable, "-m", "offload"]
    commands = {"offload --help": [*offload, "--help"], "offload hosts list": [*offload, "hosts", "list"],
                "ssh host true": [*tools.ssh, "true"]}
    tools.register(tools.destination("offload", "kept"))
    return [Row(case, {"offload": [run_measured([argv], tools.env) for _ in range(repeat)]})
            for case, argv in commands.items()]


def verdict(row: Row) -> tuple[str, str]:
    """(target, PASS/MISS/'') for one row."""
    if row.case in ("offload --help", "offload hosts list"):
        seconds = row.median("offload", "seconds")
        return f"<= {TARGET_CLI_S} s", "PASS" if seconds <= TARGET_CLI_S else "MISS"
    if row.case not in TARGET_RATIO:
        return "(scale)", ""
    ratio = row.median("offload", "seconds") / row.median("rsync", "seconds")
    passed, target = ratio <= TARGET_RATIO[row.case], f"<= {TARGET_RATIO[row.case]}x rsync"
    if row.case in TARGET_BYTES_VS_RSYNC:
        limit = TARGET_BYTES_VS_RSYNC[row.case]
        passed &= row.median("offload", "wire_bytes") <= limit * row.median("rsync", "wire_bytes")
        target += f", bytes <= {limit}x"
    return target, "PASS" if passed else "MISS"


def seconds_text(value: float | None) -> str:
    return f"{value:.3f}s" if value is not None else "-"


def mb_text(value: float | None) -> str:
    return f"{value / 1e6:.1f}MB" if value is not None else "-"


def print_table(rows: list[Row], repeat: int, keeper_peak_kib: int) -> None:
    print(f"median of {repeat} runs; bytes = loopback tx_bytes delta (/sys/class/net/lo/statistics/tx_bytes)")
    header = (f"{'case':<24}{'offload':>9}{'cold':>8}{'rsync -a':>10}{'tar|ssh':>9}{'ratio':>8}{'off bytes':>11}"
              f"{'rsync bytes':>12}  {'target':<31}result")
    print(header)
    print("-" * len(header))
    for row in rows:
        offload_s, rsync_s = row.median("offload", "seconds"), row.median("rsync", "seconds")
        ratio = f"{offload_s / rsync_s:.2f}x" if rsync_s else "-"
        target, result = verdict(row)
        bytes_shown = row.case in TARGET_RATIO
        print(f"{row.case:<24}{seconds_text(offload_s):>9}{seconds_text(row.median('offload cold', 'seconds')):>8}"
              f"{seconds_text(rsync_s):>10}"
              f"{seconds_text(row.median('tar', 'seconds')):>9}{ratio:>8}"
              f"{mb_text(row.median('offload', 'wire_bytes') if bytes_shown else None):>11}"
              f"{mb_text(row.median('rsync', 'wire_bytes') if bytes_shown else None):>12}  {target:<31}{result}")
    big_rows = [row for row in rows if row.case.startswith("big")]
    if big_rows:
        client_kib = max(run.maxrss_kib for row in big_rows for tool in ("offload", "offload cold")
                         for run in row.runs[tool])
        peak_mb = max(client_kib, keeper_peak_kib) * 1024 / 1e6
        result = "PASS" if peak_mb < TARGET_MAXRSS_MB else "MISS"
        print(f"{'offload sync peak RSS':<24}{peak_mb:>8.1f}MB  (the larger of the command's ru_maxrss and the"
              f" link keeper's VmHWM: {client_kib / 1000:.1f} MB, {keeper_peak_kib / 1000:.1f} MB)"
              f"  target < {TARGET_MAXRSS_MB} MB: {result}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="small,big,cli", help="comma-separated: small, big, cli")
    parser.add_argument("--repeat", type=int, help="runs per case and tool (default 5; 3 with --quick)")
    parser.add_argument("--big-mb", type=int, help="size of the big file in MiB (default 1024; 256 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a fast look: --repeat 3 --big-mb 256")
    options = parser.parse_args()
    repeat = options.repeat or (3 if options.quick else 5)
    big_mb = options.big_mb or (256 if options.quick else 1024)
    cases = set(options.cases.split(","))
    if not cases <= {"small", "big", "cli"}:
        parser.error(f"unknown case(s) {', '.join(sorted(cases - {'small', 'big', 'cli'}))}: use small, big, cli")
    print(f"repeat {repeat}, big file {big_mb} MiB, cases {', '.join(sorted(cases))}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench_sync.") as scratch_name, \
            SshServer(Path(scratch_name) / "sshd") as server:
        scratch = Path(scratch_name)
        tools = Tools(server, scratch)
        rows = []
        try:
            if "small" in cases:
                rows += small_cases(tools, scratch, repeat)
            if "big" in cases:
                shutil.rmtree(scratch / "remote", ignore_errors=True)
                rows += big_cases(tools, scratch, repeat, big_mb)
            if "cli" in cases:
                rows += cli_cases(tools, repeat)
        finally:
            tools.disconnect()  # the keeper goes before its sshd and its scratch directory do
    print_table(rows, repeat, tools.keeper_peak_kib)


if __name__ == "__main__":
    main()
