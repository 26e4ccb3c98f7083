"""Sync a project to the host through the agent: plan (pure), then send only what differs.

A file is up to date on the host when kind, size, mtime (to the nanosecond) and permission bits match,
as rsync's quick check decides; the agent sets each file's mtime to the laptop's after writing it.
A changed big file the host already has goes as a patch of the blocks that differ (blocks.py).
Deletions touch only paths an earlier sync put there and that are gone locally. The host keeps, and this
side says it kept, every path that is no longer what a sync wrote there (a checkpoint a run rewrote, a file
edited on the host): --force replaces those, after saying so; nothing makes a sync delete them.
"""
from __future__ import annotations

import hashlib
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from remote_agent import protocol
from remote_agent.protocol import BLOCK, CHANGED_ON_HOST, DIGEST_BYTES, NOT_WRITTEN_BY_OFFLOAD

from offload.transport.agent import DISK_HINT
from offload.paths import laptop_identity
from offload.sync.blocks import DELTA_MIN_BYTES, BlockHasher, Delta, as_ranges, block_length, plan_delta
from offload.console import ProgressBar
from offload.errors import OffloadError, RemoteError
from offload.console import human_size
from offload.sync.ignore import LocalEntry, summarize
from offload.sync.selection import select_project, selection_lines

MAX_RESENDS = 3  # a file still changing after this many tries is reported, not chased forever


@dataclass
class SyncPlan:
    send: list = field(default_factory=list)    # LocalEntry objects
    delete: list = field(default_factory=list)  # paths a sync put there and that are gone locally
    forget: list = field(default_factory=list)  # synced paths now excluded locally: kept, no longer ours
    kept: list = field(default_factory=list)    # [path, why]: changed on the host, left alone
    replace: list = field(default_factory=list)  # [path, why]: changed on the host, replaced by --force
    adopt: list = field(default_factory=list)    # the laptop's very file, but not as recorded: recorded again
    unchanged: int = 0


@dataclass
class SyncResult:
    project_dir: str
    sent_files: int
    sent_bytes: int
    deleted: int
    unchanged: int
    stage: str | None = None  # the host staged this sync's tree: a job of the project owns the live one
    kept: list = field(default_factory=list)  # [path, why] the host left alone


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


def plan_sync(local: list, present: dict, synced: list, exists_locally, changed=(), force: bool = False,
              refused=()) -> SyncPlan:
    """Pure: local entries, what the host has (path -> [kind, size, mtime_ns, mode, target]), what earlier
    syncs put there, a predicate telling whether a path still exists locally (ignored or not), the synced
    paths that are no longer what the sync wrote (changed on the host): kept, or with force replaced; and
    [path, why] of those the host refuses to touch (behind a symlink out of the project there): kept."""
    plan = SyncPlan(kept=[list(item) for item in refused])
    local_paths = set()
    changed, refused_paths = set(changed), {path for path, _ in refused}
    for entry in local:
        local_paths.add(entry.path)
        if entry.path in refused_paths:
            continue
        if up_to_date(entry, present.get(entry.path)):
            plan.unchanged += 1
            if entry.path in changed:  # size, mtime to the ns and mode are the laptop's: what a sync wrote
                plan.adopt.append(entry.path)
        elif entry.path in changed and not force:
            plan.kept.append([entry.path, CHANGED_ON_HOST])
        else:
            if entry.path in changed:
                plan.replace.append([entry.path, CHANGED_ON_HOST])
            plan.send.append(entry)
    local_dirs = {parent for path in local_paths for parent in parents(path)}
    for path in synced:
        if path in local_paths or path in refused_paths:
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
    """<name>-<8 hex of this laptop and the local absolute path>: two checkouts of the same name never
    collide, and neither do two laptops' projects at the same path."""
    absolute = str(project_root.resolve())
    key = f"{laptop_identity()}\0{absolute}"
    return f"{project_root.resolve().name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def sync_project(agent, project_root: Path, workdir: str, entries: list | None = None, out=None,
                 selection=None, include: list | tuple = (), for_run: bool = False, force: bool = False) -> SyncResult:
    """entries: exactly these (no selection lines); else selection (selection.py), else one made here with
    include. for_run: the host keeps the synced tree for the run that follows (its `start` takes it over),
    or, while a job of the project runs, stages it. force: replace files changed on the host."""
    out = out if out is not None else sys.stderr  # looked up now: a daemon redirects sys.stderr per request
    with remote_failures_explained(agent.label, workdir):
        # The host describes what earlier syncs put there while this side scans: one round trip, overlapped.
        agent.send("prepare", workdir=workdir, project=project_dir_name(project_root), manifest=True, for_run=for_run)
        try:
            if entries is None:
                selection = selection if selection is not None else select_project(project_root, include)
                entries = selection.entries
        finally:
            manifest = prepared(agent, out)  # read even when the scan failed: the link stays in step
        try:
            return sync_planned(agent, project_root, entries, manifest, out, force,
                                selection_lines(selection) if selection is not None else [])
        finally:
            try:
                agent.send("sync_done")  # no reply: the host lets the next sync of this project in
            except OffloadError:
                pass  # the link is gone, and with it the host's lock; the error on its way says more


def prepared(agent, out) -> dict:
    """The `prepared` reply, saying once if another sync of the project holds the host meanwhile."""
    while True:
        message = agent.recv()
        if message["t"] == "sync_wait":
            print(f"sync: another sync into this project on {agent.label} is in progress; waiting for it", file=out)
        elif message["t"] != "tick":
            return message


def sync_planned(agent, project_root: Path, entries: list, manifest: dict, out, force: bool,
                 extra_lines: list) -> SyncResult:
    """extra_lines: besides the summary, what the beside-rule added and what the ignore rules left out."""
    project_dir, stage = manifest["project_dir"], manifest.get("stage")
    plan = plan_sync(entries, manifest["present"], manifest["synced"],
                     lambda path: os.path.lexists(project_root / path), manifest.get("changed", ()), force,
                     manifest.get("refused", ()))
    if stage:
        print(f"sync: a run of this project is using it on {agent.label}: the files are staged, and go in "
              "when it ends (or when your run starts); the running job keeps its own", file=out)
    for path, why in plan.replace:
        print(f"sync: replacing {path} on {agent.label}: {why} (--force)", file=out)
    if not plan.send and not plan.delete:
        if plan.forget or plan.adopt:  # now ignored here: no longer ours, so never deleted there; or ours again
            apply_plan(agent, project_root, project_dir, plan, out, paths=[e.path for e in entries])
        say_kept(plan.kept, agent.label, out)
        print(f"sync: {agent.label} is up to date ({plan.unchanged} file{'' if plan.unchanged == 1 else 's'})", file=out)
        for extra_line in extra_lines:
            print(extra_line, file=out)
        return SyncResult(project_dir, 0, 0, 0, plan.unchanged, stage, plan.kept)
    host_digests, deltas = plan_deltas(agent, project_root, project_dir, plan, manifest["present"])
    check_free_space(agent.label, plan, manifest["free_bytes"], deltas)
    line = f"sync: {summarize(plan.send)}" if plan.send else "sync: nothing to send"
    if deltas:
        changed, blocks = sum(len(d.changed) for d in deltas.values()), sum(d.blocks for d in deltas.values())
        line += (f"; {len(deltas)} by delta ({changed} of {blocks} blocks): "
                 f"{human_size(bytes_to_send(plan.send, deltas))} to send")
    if plan.delete:
        line += f"; {len(plan.delete)} to delete"
    print(f"{line} -> {agent.label}:{project_dir}", file=out)
    for extra_line in extra_lines:
        print(extra_line, file=out)
    applied, pending = apply_plan(agent, project_root, project_dir, plan, out, host_digests=host_digests,
                                  deltas=deltas, paths=[e.path for e in entries], force=force)
    kept = plan.kept + applied.get("kept", [])
    say_kept(kept, agent.label, out)
    if pending:
        raise OffloadError(f"{pending[0].path} kept changing while it was being sent; it was not synced",
                           hint="stop whatever writes it, or add it to .offloadignore")
    return SyncResult(project_dir, applied["written"], applied["bytes"], applied["deleted"], plan.unchanged, stage, kept)


KEPT_LINES = 5  # kept paths named one per line; the rest are counted


def say_kept(kept: list, label: str, out) -> None:
    """One line per path the host kept (`kept out/ckpt.pt: changed on the host since it was synced`)."""
    for path, why in kept[:KEPT_LINES]:
        hint = " (--force replaces it)" if why in (CHANGED_ON_HOST, NOT_WRITTEN_BY_OFFLOAD) else ""
        print(f"sync: kept {path} on {label}: {why}{hint}", file=out)
    if len(kept) > KEPT_LINES:
        print(f"sync: kept {len(kept) - KEPT_LINES} more paths on {label} for the same reasons", file=out)


def plan_deltas(agent, project_root: Path, project_dir: str, plan: SyncPlan, present: dict) -> tuple:
    """(path -> the host's block digests, path -> Delta) for the changed big files the host already has:
    one round trip for the digests, then each local file is hashed to find the blocks that differ."""
    candidates = [e.path for e in plan.send if e.kind == "file" and e.size >= DELTA_MIN_BYTES
                  and (present.get(e.path) or [None])[0] == "file" and present[e.path][1] > 0]
    if not candidates:
        return {}, {}
    reply = agent.request("blocks", project_dir=project_dir, paths=candidates)
    blob, host_digests, offset = b"".join(agent.read_blob(int(reply["size"]))), {}, 0
    for path, count in reply["found"]:
        host_digests[path] = blob[offset:offset + count * DIGEST_BYTES]
        offset += count * DIGEST_BYTES
    deltas = {path: plan_delta(project_root / path, digests) for path, digests in host_digests.items()}
    return host_digests, {path: delta for path, delta in deltas.items() if delta is not None}


def bytes_to_send(entries: list, deltas: dict) -> int:
    return sum(deltas[e.path].wire_bytes if e.path in deltas else e.size for e in entries)


def check_free_space(label: str, plan: SyncPlan, free_bytes: int, deltas: dict | None = None) -> None:
    total = bytes_to_send(plan.send, deltas or {})
    if total > free_bytes:
        raise OffloadError(f"not enough disk on {label}: {human_size(total)} to send, {human_size(free_bytes)} free",
                           hint=DISK_HINT)


def apply_plan(agent, project_root: Path, project_dir: str, plan: SyncPlan, out, record: bool = True,
               host_digests: dict | None = None, deltas: dict | None = None, paths: list | None = None,
               force: bool = False) -> tuple:
    """Delete and send what the plan says; returns the agent's tally and the entries that kept changing.
    record=False: files that are not the sync's (put back for --resume), never deleted by a later sync.
    A file in deltas goes as a patch; one sent again after it changed is hashed again against host_digests.
    paths: every path the laptop has, recorded as the sync's once the apply succeeds."""
    host_digests, deltas = dict(host_digests or {}), dict(deltas or {})
    extra = {"paths": paths} if paths is not None else {}
    agent.send("apply", project_dir=project_dir, delete=plan.delete, forget=plan.forget, adopt=plan.adopt,
               record=record, force=force, **extra)
    pending = list(plan.send)
    with ProgressBar("sync", bytes_to_send(plan.send, deltas), out) as advance:
        for attempt in range(MAX_RESENDS):
            sent = []
            for entry in pending:
                delta = deltas.pop(entry.path, None) if attempt == 0 else None
                if delta is None and attempt > 0 and entry.path in host_digests:
                    delta = plan_delta(project_root / entry.path, host_digests[entry.path])
                if delta is None:
                    host_digests.pop(entry.path, None)  # a put replaces the host's file: its digests are gone
                sent.append(send_entry(agent, project_root, entry, advance, delta=delta, digests=record))
            pending = [refresh(project_root, e) for e in sent if e is not None]
            pending = [e for e in pending if e is not None]
            if not pending:
                break
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


def send_entry(agent, project_root: Path, entry: LocalEntry, advance, delta: Delta | None = None,
               digests: bool = False) -> LocalEntry | None:
    """Stream one entry, whole or (with a delta) as a patch; with digests, a big file's block digests follow
    it. Returns the entry if it changed while being sent: its last byte then said so, and the host kept its
    older copy whole (it renames a file into place only after that byte)."""
    header = {"path": entry.path, "kind": entry.kind, "mode": entry.mode, "mtime_ns": entry.mtime_ns}
    if entry.kind != "file":
        agent.write(protocol.encode("put", **header, target=entry.target))
        return None
    try:
        f = open(project_root / entry.path, "rb")
    except FileNotFoundError:
        return None  # deleted since the scan: the next sync deletes it on the host too
    with f:
        if delta is not None:
            return None if send_patch(agent, f, entry, delta, advance) else entry
        before = os.fstat(f.fileno())
        size = before.st_size
        hasher = BlockHasher() if digests and size >= DELTA_MIN_BYTES else None
        header.update(size=size + 1, mtime_ns=before.st_mtime_ns)  # + 1: the status byte after the bytes
        agent.write(protocol.encode("put", **header))
        remaining, padded = size, False
        while remaining:
            piece = f.read(min(remaining, protocol.CHUNK))
            if not piece:  # the file shrank under us: keep the stream in step; the status byte says so
                piece, padded = b"\0" * min(remaining, protocol.CHUNK), True
            agent.write(piece)
            if hasher is not None:
                hasher.update(piece)
            remaining -= len(piece)
            advance(len(piece))
        after = os.fstat(f.fileno())
    whole = not padded and (after.st_size, after.st_mtime_ns) == (size, before.st_mtime_ns)
    agent.write(b"\1" if whole else b"\0")
    if not whole:
        return entry
    if hasher is not None:  # the digests of exactly the bytes sent, kept on the host for the next patch
        blob = hasher.digests()
        agent.write(protocol.encode("digests", path=entry.path, file_size=size, mtime_ns=before.st_mtime_ns,
                                    size=len(blob)))
        agent.write(blob)
    return None


def send_patch(agent, f, entry: LocalEntry, delta: Delta, advance) -> bool:
    """The changed blocks' digests, then the blocks, then one status byte: 1 if the file is still the one that
    was hashed (then the host applies the patch), 0 if not (then it throws the patch away). Nothing is sent
    when the file already changed since it was hashed; False then too."""
    before = os.fstat(f.fileno())
    if not delta.stable or (before.st_size, before.st_mtime_ns) != (delta.size, delta.mtime_ns):
        return False
    ranges = as_ranges(delta.changed)
    agent.write(protocol.encode("patch", path=entry.path, mode=entry.mode, mtime_ns=delta.mtime_ns,
                                file_size=delta.size, ranges=ranges, size=delta.wire_bytes))
    agent.write(b"".join(delta.digests[i * DIGEST_BYTES:(i + 1) * DIGEST_BYTES] for i in delta.changed))
    padded = False
    for first, count in ranges:
        f.seek(first * BLOCK)
        remaining = sum(block_length(index, delta.size) for index in range(first, first + count))
        while remaining:
            piece = f.read(min(remaining, protocol.CHUNK))
            if not piece:  # the file shrank under us: keep the stream in step, then mark the patch incomplete
                piece, padded = b"\0" * min(remaining, protocol.CHUNK), True
            agent.write(piece)
            remaining -= len(piece)
            advance(len(piece))
    after = os.fstat(f.fileno())
    whole = not padded and (after.st_size, after.st_mtime_ns) == (delta.size, delta.mtime_ns)
    agent.write(b"\1" if whole else b"\0")
    return whole


def put_back(agent, files_dir: Path, entries: list, project_dir: str, out=None) -> dict:
    """Put these files of files_dir (a run's fetched files, fetched.files_to_put_back) in place under project_dir
    on the host."""
    out = out if out is not None else sys.stderr
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
