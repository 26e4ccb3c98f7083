"""Sync a project to the host through the agent: plan (pure), then send only what differs.

A file is up to date on the host when kind, size, mtime (to the nanosecond) and permission bits match,
as rsync's quick check decides; the agent sets each file's mtime to the laptop's after writing it.
Deletions touch only paths an earlier sync put there and that are gone locally.
"""
from __future__ import annotations

import hashlib
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from remote_agent import protocol

from .agent import DISK_HINT
from .progress import progress_bar
from .errors import OffloadError, RemoteError
from .ignore import LocalEntry, human_size, scan_project, summarize

MAX_RESENDS = 3  # a file still changing after this many tries is reported, not chased forever


@dataclass
class SyncPlan:
    send: list = field(default_factory=list)    # LocalEntry objects
    delete: list = field(default_factory=list)  # paths a sync put there and that are gone locally
    forget: list = field(default_factory=list)  # synced paths now excluded locally: kept, no longer ours
    unchanged: int = 0


@dataclass
class SyncResult:
    project_dir: str
    sent_files: int
    sent_bytes: int
    deleted: int
    unchanged: int


def up_to_date(entry: LocalEntry, remote: list | None) -> bool:
    if remote is None:
        return False
    kind, size, mtime_ns, mode, target = remote
    if kind != entry.kind:
        return False
    if kind == "file":
        return size == entry.size and mtime_ns == entry.mtime_ns and (mode & 0o777) == (entry.mode & 0o777)
    if kind == "link":
        return target == entry.target
    return True


def plan_sync(local: list, present: dict, synced: list, exists_locally) -> SyncPlan:
    """Pure: local entries, what the host has (path -> [kind, size, mtime_ns, mode, target]), what earlier
    syncs put there, and a predicate telling whether a path still exists locally (ignored or not)."""
    plan = SyncPlan()
    local_paths = set()
    for entry in local:
        local_paths.add(entry.path)
        if up_to_date(entry, present.get(entry.path)):
            plan.unchanged += 1
        else:
            plan.send.append(entry)
    local_dirs = {parent for path in local_paths for parent in parents(path)}
    for path in synced:
        if path in local_paths:
            continue
        # A synced file where the laptop now has a directory would block the files inside it: it goes.
        replaced = path in local_dirs and present.get(path, ["dir"])[0] != "dir"
        (plan.delete if replaced or not exists_locally(path) else plan.forget).append(path)
    return plan


def parents(path: str) -> list:
    """"a/b/c" -> ["a", "a/b"]."""
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def project_dir_name(project_root: Path) -> str:
    """<name>-<8 hex of the local absolute path>: two checkouts of the same name never collide."""
    absolute = str(project_root.resolve())
    return f"{project_root.resolve().name}-{hashlib.sha256(absolute.encode()).hexdigest()[:8]}"


def sync_project(agent, project_root: Path, workdir: str, entries: list | None = None, out=sys.stderr) -> SyncResult:
    entries = scan_project(project_root) if entries is None else entries
    with remote_failures_explained(agent.label, workdir):
        prepared = agent.request("prepare", workdir=workdir, project=project_dir_name(project_root))
        project_dir = prepared["project_dir"]
        manifest = agent.request("manifest", project_dir=project_dir, paths=[e.path for e in entries])
        plan = plan_sync(entries, manifest["present"], manifest["synced"],
                         lambda path: os.path.lexists(project_root / path))
        if not plan.send and not plan.delete:
            if plan.forget:  # now ignored here: recorded as no longer ours, so it is never deleted there
                apply_plan(agent, project_root, project_dir, plan, out)
            print(f"sync: {agent.label} is up to date ({plan.unchanged} files)", file=out)
            return SyncResult(project_dir, 0, 0, 0, plan.unchanged)
        check_free_space(agent.label, plan, prepared["free_bytes"])
        line = f"sync: {summarize(plan.send)}" if plan.send else "sync: nothing to send"
        if plan.delete:
            line += f"; {len(plan.delete)} to delete"
        print(f"{line} -> {agent.label}:{project_dir}", file=out)
        applied, pending = apply_plan(agent, project_root, project_dir, plan, out)
    if pending:
        raise OffloadError(f"{pending[0].path} kept changing while it was being sent; it was not synced",
                           hint="stop whatever writes it, or add it to .offloadignore")
    return SyncResult(project_dir, applied["written"], applied["bytes"], applied["deleted"], plan.unchanged)


def check_free_space(label: str, plan: SyncPlan, free_bytes: int) -> None:
    total = sum(e.size for e in plan.send)
    if total > free_bytes:
        raise OffloadError(f"not enough disk on {label}: {human_size(total)} to send, {human_size(free_bytes)} free",
                           hint=DISK_HINT)


def apply_plan(agent, project_root: Path, project_dir: str, plan: SyncPlan, out, record: bool = True) -> tuple:
    """Delete and send what the plan says; returns the agent's tally and the entries that kept changing.
    record=False: files that are not the sync's (put back for --resume), never deleted by a later sync."""
    agent.send("apply", project_dir=project_dir, delete=plan.delete, forget=plan.forget, record=record)
    pending = list(plan.send)
    with progress_bar("sync", sum(e.size for e in plan.send), out) as advance:
        for _ in range(MAX_RESENDS):
            pending = [e for e in (send_entry(agent, project_root, e, advance) for e in pending) if e is not None]
            if not pending:
                break
            pending = [refresh(project_root, e) for e in pending]
            pending = [e for e in pending if e is not None]
    agent.send("end")
    return agent.recv(), pending


@contextmanager
def remote_failures_explained(label: str, workdir: str):
    """The agent reports an OSError by its strerror; say what it means for the sync and what to do."""
    try:
        yield
    except RemoteError as exc:
        detail = getattr(exc, "detail", exc.message)
        if exc.code == "disk_full":
            raise RemoteError(f"disk full on {label} (workdir {workdir}): {detail}", code=exc.code,
                              hint=DISK_HINT) from None
        if exc.code == "not_writable":
            raise RemoteError(f"cannot write to workdir {workdir} on {label}: {detail}", code=exc.code,
                              hint="set workdir for this host in hosts.yaml to a directory you can write to") from None
        raise


def refresh(project_root: Path, entry: LocalEntry) -> LocalEntry | None:
    """The entry as it is now on disk (None if it is gone)."""
    path = project_root / entry.path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return LocalEntry(entry.path, entry.kind, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777, entry.target)


def send_entry(agent, project_root: Path, entry: LocalEntry, advance) -> LocalEntry | None:
    """Stream one entry. Returns the entry if it changed while being sent (the host was told to drop it)."""
    header = {"path": entry.path, "kind": entry.kind, "mode": entry.mode, "mtime_ns": entry.mtime_ns}
    if entry.kind != "file":
        agent.write(protocol.encode("put", **header, target=entry.target))
        return None
    try:
        f = open(project_root / entry.path, "rb")
    except FileNotFoundError:
        return None  # deleted since the scan: the next sync deletes it on the host too
    with f:
        before = os.fstat(f.fileno())
        size = before.st_size
        header.update(size=size, mtime_ns=before.st_mtime_ns)
        agent.write(protocol.encode("put", **header))
        remaining, padded = size, False
        while remaining:
            piece = f.read(min(remaining, protocol.CHUNK))
            if not piece:  # the file shrank under us: keep the stream in step, then drop it
                piece, padded = b"\0" * min(remaining, protocol.CHUNK), True
            agent.write(piece)
            remaining -= len(piece)
            advance(len(piece))
        after = os.fstat(f.fileno())
    if padded or (after.st_size, after.st_mtime_ns) != (size, before.st_mtime_ns):
        agent.write(protocol.encode("drop", path=entry.path))
        return entry
    return None


def put_back(agent, files_dir: Path, project_dir: str, out=sys.stderr) -> dict:
    """Put every file under files_dir (a run's fetched files) in place under project_dir on the host."""
    entries = scan_all(files_dir)
    if not entries:
        return {"written": 0, "bytes": 0}
    print(f"resume: putting back {summarize(entries)} -> {agent.label}:{project_dir}", file=out)
    with remote_failures_explained(agent.label, project_dir):
        applied, pending = apply_plan(agent, files_dir, project_dir, SyncPlan(send=entries), out, record=False)
    if pending:
        raise OffloadError(f"{pending[0].path} kept changing while it was being put back")
    return applied


def scan_all(root: Path) -> list:
    """Every regular file below root, no ignore rules (fetched files are exactly what the user wants)."""
    found = []
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            if name.endswith(".offload-part"):
                continue  # an interrupted fetch's leftovers are not files of the run
            path = Path(directory) / name
            st = path.lstat()
            if path.is_file() and not path.is_symlink():
                found.append(LocalEntry(path.relative_to(root).as_posix(), "file", st.st_size, st.st_mtime_ns,
                                        st.st_mode & 0o7777))
    return sorted(found, key=lambda e: e.path)
