"""Applying a sync plan through the agent: deletions, then each entry streamed whole or as a patch of the
blocks that differ (blocks.py), sent again while it keeps changing under us, never torn on the host."""
from __future__ import annotations

import os
from pathlib import Path

from remote_agent import protocol
from remote_agent.protocol import BLOCK, DIGEST_BYTES

from offload.console import ProgressBar
from offload.sync.bundles import Bundler, bundled
from offload.sync.blocks import DELTA_MIN_BYTES, BlockHasher, Delta, as_ranges, block_length, plan_delta
from offload.sync.compress import Compression, mode_from_env
from offload.sync.frames import open_body
from offload.sync.push_plan import SyncPlan
from offload.sync.scan import LocalEntry

MAX_RESENDS = 3  # a file still changing after this many tries is reported, not chased forever


def bytes_to_send(entries: list, deltas: dict) -> int:
    return sum(deltas[e.path].wire_bytes if e.path in deltas else e.size for e in entries)


def apply_plan(agent, project_root: Path, project_dir: str, plan: SyncPlan, out, record: bool = True,
               host_digests: dict | None = None, deltas: dict | None = None, paths: list | None = None,
               force: bool = False) -> tuple:
    """Delete and send what the plan says; returns the agent's tally and the entries that kept changing.
    record=False: files that are not the sync's (put back for --resume), never deleted by a later sync.
    A file in deltas goes as a patch; one sent again after it changed is hashed again against host_digests.
    paths: every path the laptop has, recorded as the sync's once the apply succeeds."""
    host_digests, deltas = dict(host_digests or {}), dict(deltas or {})
    compression = Compression(agent, mode_from_env())
    extra = {"paths": paths} if paths is not None else {}
    later = bases_deleted(plan.delete, deltas, os.path.basename(project_dir))
    agent.send("apply", project_dir=project_dir, delete=[p for p in plan.delete if p not in later],
               delete_after=sorted(later), forget=plan.forget, adopt=plan.adopt, record=record, force=force, **extra)
    pending = list(plan.send)
    with ProgressBar("sync", bytes_to_send(plan.send, deltas), out) as advance:
        for attempt in range(MAX_RESENDS):
            sent = []
            bundler = Bundler(agent, project_root, advance, compression)
            for entry in pending:
                if bundled(entry) and entry.path not in deltas and entry.path not in host_digests:
                    bundler.add(entry)
                    continue
                delta = deltas.pop(entry.path, None) if attempt == 0 else None
                if delta is None and attempt > 0 and entry.path in host_digests:
                    delta = plan_delta(project_root / entry.path, host_digests[entry.path])
                if delta is None:
                    host_digests.pop(entry.path, None)  # a put replaces the host's file: its digests are gone
                sent.append(send_entry(agent, project_root, entry, advance, delta=delta, digests=record,
                                       compression=compression))
            bundler.flush()
            pending = [refresh(project_root, e) for e in sent + bundler.changed if e is not None]
            pending = [e for e in pending if e is not None]
            if not pending:
                break
    agent.send("end")
    applied = agent.recv()
    applied["compressed_with"] = compression.encoder.name if compression.used else None
    return applied, pending


def bases_deleted(deletes: list, deltas: dict, project_name: str) -> set:
    """The deletions the host must do only after the puts: paths of this project that patches are built from
    (a renamed file or data dir), and the directories above them."""
    bases = {d.base[1] for d in deltas.values() if d.base is not None and d.base[0] == project_name}
    return {path for path in deletes if path in bases or any(base.startswith(path + "/") for base in bases)}


def refresh(project_root: Path, entry: LocalEntry) -> LocalEntry | None:
    """The entry as it is now on disk (None if it is gone)."""
    path = project_root / entry.path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return LocalEntry(entry.path, entry.kind, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777, entry.target)


def send_entry(agent, project_root: Path, entry: LocalEntry, advance, delta: Delta | None = None,
               digests: bool = False, compression: Compression | None = None) -> LocalEntry | None:
    """Stream one entry, whole or (with a delta) as a patch; with digests, a big file's block digests follow
    it. Returns the entry if it changed while being sent: its last byte then said so, and the host kept its
    older copy whole (it renames a file into place only after that byte)."""
    header = {"path": entry.path, "kind": entry.kind, "mode": entry.mode, "mtime_ns": entry.mtime_ns}
    if entry.kind != "file":
        agent.write(protocol.encode("put", **header, target=entry.target))
        return None
    try:
        f = open(project_root / entry.path, "rb", buffering=0)  # unbuffered: one read a small file, no buffer object
    except FileNotFoundError:
        return None  # deleted since the scan: the next sync deletes it on the host too
    with f:
        if delta is not None:
            return None if send_patch(agent, f, entry, delta, advance, compression) else entry
        before = os.fstat(f.fileno())
        size = before.st_size
        hasher = BlockHasher() if digests and size >= DELTA_MIN_BYTES else None
        body = open_body(agent, size + 1, compression)  # + 1: the status byte after the bytes
        header.update(body.fields, mtime_ns=before.st_mtime_ns)
        agent.write(protocol.encode("put", **header))
        remaining, padded = size, False
        while remaining:
            piece = f.read(min(remaining, protocol.CHUNK))
            if not piece:  # the file shrank under us: keep the stream in step; the status byte says so
                piece, padded = b"\0" * min(remaining, protocol.CHUNK), True
            body.write(piece)
            if hasher is not None:
                hasher.update(piece)
            remaining -= len(piece)
            advance(len(piece))
        after = os.fstat(f.fileno())
    whole = not padded and (after.st_size, after.st_mtime_ns) == (size, before.st_mtime_ns)
    body.write(b"\1" if whole else b"\0")
    body.close()
    if not whole:
        return entry
    if hasher is not None:  # the digests of exactly the bytes sent, kept on the host for the next patch
        blob = hasher.digests()
        agent.write(protocol.encode("digests", path=entry.path, file_size=size, mtime_ns=before.st_mtime_ns,
                                    size=len(blob)))
        agent.write(blob)
    return None


def send_patch(agent, f, entry: LocalEntry, delta: Delta, advance, compression: Compression | None = None) -> bool:
    """The changed blocks' digests, then the blocks, then one status byte: 1 if the file is still the one that
    was hashed (then the host applies the patch), 0 if not (then it throws the patch away). Nothing is sent
    when the file already changed since it was hashed; False then too."""
    before = os.fstat(f.fileno())
    if not delta.stable or (before.st_size, before.st_mtime_ns) != (delta.size, delta.mtime_ns):
        return False
    ranges = as_ranges(delta.changed)
    body = open_body(agent, delta.wire_bytes, compression)
    based = {"base": delta.base, "sha256": delta.sha256} if delta.base is not None else {}
    agent.write(protocol.encode("patch", path=entry.path, mode=entry.mode, mtime_ns=delta.mtime_ns,
                                file_size=delta.size, ranges=ranges, **body.fields, **based))
    body.write(b"".join(delta.digests[i * DIGEST_BYTES:(i + 1) * DIGEST_BYTES] for i in delta.changed))
    padded = False
    for first, count in ranges:
        f.seek(first * BLOCK)
        remaining = sum(block_length(index, delta.size) for index in range(first, first + count))
        while remaining:
            piece = f.read(min(remaining, protocol.CHUNK))
            if not piece:  # the file shrank under us: keep the stream in step, then mark the patch incomplete
                piece, padded = b"\0" * min(remaining, protocol.CHUNK), True
            body.write(piece)
            remaining -= len(piece)
            advance(len(piece))
    after = os.fstat(f.fileno())
    whole = not padded and (after.st_size, after.st_mtime_ns) == (delta.size, delta.mtime_ns)
    body.write(b"\1" if whole else b"\0")
    body.close()
    return whole
