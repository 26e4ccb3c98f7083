"""The fetch engine: copy a run's files from its host, verified by SHA-256, resumable.

The host lists what the patterns match, with each file's SHA-256 (fetch_plan.py); it resolves every path
itself, so nothing outside the run's project directory is ever sent, whatever the laptop asks. The laptop,
in turn, writes only what it asked for (fetch_paths.py), whatever the host lists. Each file is written next
to its final name as `.NAME.offload-part`, resumed from where an interrupted fetch left it, and
renamed only once its hash matches: a file under its final name is always whole and verified.

Runs of a project share its directory on the host, so a file may have been changed by a later run: the host
lists only the versions the run itself left (see remote_agent/outputs.py) and names the rest, withheld unless
--current asks for the versions there now.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import sys
from pathlib import Path

from remote_agent import protocol
from remote_agent.protocol import DEFAULT_PATTERNS, PART_SUFFIX, RequestError
from remote_agent.fetching import pattern_parts

from offload.console import ProgressBar
from offload.errors import OffloadError
from offload.sync.fetch_paths import INTO_RECORDS, check_listing, destination, never_written
from offload.console import human_size, plural
from offload.sync.fetch_plan import SILENCE_LIMIT_S, FetchPlan, LocalState, RemoteFile, list_remote, plan_fetch
from offload.sync.withheld_words import describe_withheld

NAMED_FILES = 10  # up to this many fetched files are named one per line


def checked_patterns(patterns: list) -> list:
    """The patterns (default out/**), refused here already when absolute or climbing with `..`; the host
    checks again, with realpath, and has the last word."""
    patterns = list(patterns) or list(DEFAULT_PATTERNS)
    for pattern in patterns:
        try:
            parts = pattern_parts(pattern)
        except RequestError as exc:
            raise OffloadError(str(exc), hint="patterns are globs relative to the run's project directory, e.g. out/**") from None
        if never_written(parts):
            raise OffloadError(f"refusing {pattern}: {INTO_RECORDS}", hint="copy the file elsewhere on the host first")
    return patterns


def part_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{PART_SUFFIX}")


def sha256_of(path: Path, limit: int | None = None):
    """A hashlib object fed the file's first `limit` bytes (all of it without a limit)."""
    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as f:
        while remaining is None or remaining > 0:
            piece = f.read(protocol.CHUNK if remaining is None else min(protocol.CHUNK, remaining))
            if not piece:
                break
            digest.update(piece)
            if remaining is not None:
                remaining -= len(piece)
    return digest


def local_state(dest: Path, remote: RemoteFile) -> LocalState:
    final = destination(dest, remote.path)
    final_sha = None
    if final.is_file() and final.stat().st_size == remote.size:
        final_sha = sha256_of(final).hexdigest()
    part = part_path(final)
    return LocalState(final_sha, part.stat().st_size if part.is_file() else None)


def list_run(agent, meta: dict, patterns: list, current: bool = False) -> dict:
    """What the host has of run `meta` under `patterns` (list_remote's reply, and the patterns checked):
    the run's own versions, unless `current`."""
    patterns = checked_patterns(patterns)
    listing = list_remote(agent, meta["project_dir"], patterns, meta.get("run_dir"), current)
    return {**listing, "patterns": patterns, "run_id": meta["run_id"]}


def fetch_into(agent, meta: dict, patterns: list, dest_dir, out=None, current: bool = False) -> dict:
    """Fetch the files of run `meta` that match `patterns` into dest_dir through an open agent: the run's own
    versions, or with `current` the versions on the host now. Returns {fetched, bytes, skipped, files (fetched
    relpaths), kept (relpaths already here), withheld (Withheld), dest}."""
    return fetch_listed(agent, list_run(agent, meta, patterns, current), dest_dir, out)


def fetch_listed(agent, listing: dict, dest_dir, out=None) -> dict:
    """Fetch what list_run listed into dest_dir, saying first what it withheld (to `out`, default stderr)."""
    out = out or sys.stderr
    check_listing(listing["patterns"], [remote.path for remote in listing["files"]], agent.label)  # before any write
    dest = Path(dest_dir)
    where = f"{listing['project_dir']} on {agent.label}"
    summary = {"fetched": 0, "bytes": 0, "skipped": 0, "files": [], "kept": [], "withheld": listing["withheld"],
               "dest": str(dest)}
    if listing["own_versions"] is False:
        print(f"fetch: run {listing['run_id']} has no record of the files it wrote (an older run, one still running, "
              "or its supervisor was lost): fetching the versions there now, whichever run wrote them", file=out)
    for line in describe_withheld(listing["withheld"], listing["run_id"]):
        print(f"fetch: {line}", file=out)
    if not listing["files"]:
        if not listing["withheld"]:
            print(f"fetch: no files match {' '.join(listing['patterns'])} in {where}", file=out)
        return summary
    for pattern in listing["unmatched"]:
        print(f"fetch: no files match {pattern} in {where}", file=out)
    plan = plan_fetch(listing["files"], {remote.path: local_state(dest, remote) for remote in listing["files"]})
    with ProgressBar("fetch", plan.bytes_to_fetch, out) as advance:
        for remote, offset in plan.fetch:
            summary["bytes"] += download(agent, listing["project_dir"], remote, dest, offset, advance, out)
            summary["files"].append(remote.path)
    summary.update(fetched=len(plan.fetch), skipped=len(plan.skip), kept=[remote.path for remote in plan.skip])
    report(summary, plan, agent.label, out)
    return summary


def report(summary: dict, plan: FetchPlan, label: str, out) -> None:
    if len(plan.fetch) <= NAMED_FILES:
        for remote, _ in plan.fetch:
            print(f"fetch: {remote.path} ({human_size(remote.size)})", file=out)
    skipped = summary["skipped"]
    same = f"already here with the same SHA-256 -> {summary['dest']}"
    if not summary["fetched"]:
        print(f"fetch: nothing to transfer, {plural(skipped, 'file')} {same}", file=out)
        return
    print(f"fetch: {plural(summary['fetched'], 'file')} ({human_size(summary['bytes'])}) from {label}"
          + (f", {skipped} {same}" if skipped else f" -> {summary['dest']}"), file=out)


def download(agent, project_dir: str, remote: RemoteFile, dest: Path, offset: int, advance, out) -> int:
    """Fetch one file into its part file from `offset`, verify it, rename it. Returns the bytes received.
    A part that does not verify is discarded and the file fetched once more from the start."""
    final = destination(dest, remote.path)
    if final.is_dir():
        raise OffloadError(f"{final} is a directory here, but {remote.path} is a file on {agent.label}",
                           hint="move the directory away, or fetch with --to DIR")
    final.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(final)
    received = 0
    with LockedPart(part, final) as f:
        for attempt in range(2):
            f.truncate(offset)
            digest = sha256_of(part, offset) if offset else hashlib.sha256()
            f.seek(offset)
            received += receive(agent, project_dir, remote, f, offset, digest, advance)
            if digest.hexdigest() == remote.sha256:
                break
            if attempt == 0:
                print(f"fetch: {remote.path} did not match its SHA-256{' (resumed)' if offset else ''}: "
                      "fetching it again", file=out)
                offset = 0
        else:
            part.unlink()  # nothing unverified is kept
            raise OffloadError(f"{remote.path} from {agent.label} does not match its SHA-256 after two tries",
                               hint="is the run still writing it? fetch again once it has finished")
        os.utime(f.fileno(), ns=(remote.mtime_ns, remote.mtime_ns))
        os.replace(part, final)
    return received


def receive(agent, project_dir: str, remote: RemoteFile, f, offset: int, digest, advance) -> int:
    """Ask for bytes [offset, size) and append them to f and digest as they arrive."""
    agent.send("read_file", project_dir=project_dir, path=remote.path, offset=offset, end=remote.size)
    position = offset
    while True:
        message = agent.recv(timeout=SILENCE_LIMIT_S)
        if message["t"] == "file_chunk":
            if message["offset"] != position:
                raise OffloadError(f"{remote.path} from {agent.label} arrived out of order "
                                   f"(at {message['offset']}, expected {position})")
            for piece in agent.read_blob(message["size"]):
                f.write(piece)
                digest.update(piece)
                advance(len(piece))
            position += message["size"]
        elif message["t"] == "file_end":
            return position - offset
        elif message["t"] != "tick":
            raise OffloadError(f"unexpected message from {agent.label} while fetching {remote.path}: {message['t']}")


class LockedPart:
    """The part file, opened unbuffered (what arrived is on disk when the process dies) and locked, so two
    fetches into the same place cannot interleave their bytes."""

    def __init__(self, part: Path, final: Path):
        self.part, self.final = part, final

    def __enter__(self):
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OffloadError(f"another offload fetch is writing {self.final}", hint="wait for it to finish") from None
        self.file = open(fd, "r+b", buffering=0)
        return self.file

    def __exit__(self, *exc):
        self.file.close()
