"""Issue 14's targets, and the table bench_link.py prints: medians, ratios, bytes on the wire, PASS/MISS.

The table is Markdown, so it goes into a note as it is.
"""
from __future__ import annotations

from link_tools import OFFLOAD, RSYNC, RSYNC_Z, SSH_PIPE, TAR_ZSTD

# (link or None for every link, case) -> [(reference tool, offload's time at most this times the tool's)]
TIME_TARGETS = {
    ("100mbit", "ML project first sync"): [(RSYNC, 0.45), (RSYNC_Z, 1.0)],
    ("1gbit", "ML project first sync"): [(RSYNC, 0.6), (RSYNC_Z, 1.0)],
    ("100mbit", "source tree first sync"): [(RSYNC, 0.5)],
    (None, "data dir renamed"): [(RSYNC, 0.05)],
    (None, "same data, second project"): [(RSYNC, 0.05)],
    (None, "project deleted and re-cloned"): [(RSYNC, 0.05)],
    (None, "1 MiB changed"): [(RSYNC, 0.3)],
    (None, "nothing changed"): [(RSYNC, 0.15)],
    ("loopback", "1 GiB random first sync"): [(SSH_PIPE, 1.1)],
    ("loopback", "100k files nothing changed"): [(RSYNC, 0.5)],
    ("loopback", "100k files first sync"): [(RSYNC, 1.0)],
}
WIRE_SHARE_TARGETS = {"data dir renamed": 0.01, "same data, second project": 0.01,
                      "project deleted and re-cloned": 0.01}  # offload's bytes on the wire <= this share of the data
COLUMNS = (OFFLOAD, RSYNC, RSYNC_Z, TAR_ZSTD, SSH_PIPE)


def time_targets(row) -> list:
    return TIME_TARGETS.get((row.link, row.case)) or TIME_TARGETS.get((None, row.case)) or []


def verdict(row) -> tuple[str, str]:
    """(the target in words, PASS/MISS), or ('', '') where the issue sets none for this row."""
    words, passed = [], True
    offload_s = row.median(OFFLOAD)
    for tool, limit in time_targets(row):
        words.append(f"<= {limit}x {tool}")
        passed &= row.median(tool) is not None and offload_s <= limit * row.median(tool)
    if row.case in WIRE_SHARE_TARGETS:
        share = WIRE_SHARE_TARGETS[row.case]
        words.append(f"wire <= {share:.0%} of data")
        passed &= row.median(OFFLOAD, "wire_bytes") <= share * row.data_bytes
    return ("; ".join(words), "PASS" if passed else "MISS") if words else ("", "")


def seconds_text(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} s" if value >= 0.995 else f"{value:.3f} s"


def megabytes_text(value: float | None) -> str:
    return "" if value is None else f"{value / 1e6:.1f} MB" if value >= 1e5 else f"{value / 1e3:.0f} KB"


def ratios_text(row) -> str:
    offload_s = row.median(OFFLOAD)
    references = [tool for tool, _ in time_targets(row)] or [RSYNC]
    return ", ".join(f"{offload_s / row.median(tool):.2f}x {tool}" for tool in references if row.median(tool))


def print_table(rows: list, repeat: int) -> None:
    if not rows:
        return
    shown = [tool for tool in COLUMNS if any(tool in row.runs for row in rows)]
    print(f"\nmedians of {repeat} runs; wire = bytes both ways on the host link (the laptop end's veth "
          "tx_bytes + rx_bytes; on loopback lo's tx_bytes,\nwhich also counts whatever else on the machine talks over "
          "loopback meanwhile), headers included\n")
    print("| link | case | data | " + " | ".join(shown) + " | offload ratio | wire: " + " | wire: ".join(shown)
          + " | target | result |")
    print("|" + " --- |" * (6 + 2 * len(shown)))
    for row in rows:
        target, result = verdict(row)
        times = [seconds_text(row.median(tool)) for tool in shown]
        wires = [megabytes_text(row.median(tool, "wire_bytes")) for tool in shown]
        print(f"| {row.link} | {row.case} | {megabytes_text(row.data_bytes)} | " + " | ".join(times)
              + f" | {ratios_text(row)} | " + " | ".join(wires) + f" | {target} | {result} |")


MEMORY_LIMIT = 200e6  # issue 14: peak memory of the sync, laptop and host


def print_memory(rows: list) -> None:
    """The highest peak over every offload run: the issue's target is for the sync, whatever the case."""
    runs = [run for row in rows for run in row.runs.get(OFFLOAD, [])]
    if not runs:
        return
    laptop, host = max(run.laptop_peak for run in runs), max(run.host_peak for run in runs)
    result = "PASS" if max(laptop, host) < MEMORY_LIMIT else "MISS"
    print(f"\npeak memory of offload's syncs (VmHWM, the highest of {len(runs)} runs): laptop "
          f"{megabytes_text(laptop)} (the command and its link keeper), host {megabytes_text(host)} (the agents); "
          f"target < {MEMORY_LIMIT / 1e6:.0f} MB: {result}")
