"""Sync a project to the host through the agent: plan (push_plan.py, pure), then send only what differs (send.py).

The host describes what earlier syncs put there while this side scans; a changed big file the host already
has goes as a patch of the blocks that differ (blocks.py). The host keeps, and this side says it kept, every
path that is no longer what a sync wrote there (a checkpoint a run rewrote, a file edited on the host):
--force replaces those, after saying so; nothing makes a sync delete them.
"""
from __future__ import annotations

import hashlib
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from remote_agent import collector
from remote_agent.protocol import CHANGED_ON_HOST, DIGEST_BYTES, NOT_WRITTEN_BY_OFFLOAD, PART_SUFFIX

from offload.transport.agent import DISK_HINT
from offload.paths import laptop_identity
from offload.sync.bases import plan_based
from offload.sync.known_manifest import completed, known_token, planned
from offload.sync.blocks import DELTA_MIN_BYTES, plan_delta
from offload.errors import OffloadError, RemoteError
from offload.console import human_size
from offload.sync.push_plan import SyncPlan, plan_sync
from offload.sync.scan import LocalEntry, summarize
from offload.sync.selection import select_project, selection_lines
from offload.sync.send import apply_plan, bytes_to_send


@dataclass
class SyncResult:
    project_dir: str
    sent_files: int
    sent_bytes: int
    deleted: int
    unchanged: int
    stage: str | None = None  # the host staged this sync's tree: a job of the project owns the live one
    kept: list = field(default_factory=list)  # [path, why] the host left alone
    wire_bytes: int = 0  # what the sync's entries took on the link, compressed or not
    compressed_with: str | None = None  # the codec, when any of them went compressed


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
    key = (workdir, project_dir_name(project_root))
    with remote_failures_explained(agent.label, workdir), collector.paused():
        # The host describes what earlier syncs put there while this side scans: one round trip, overlapped.
        agent.send("prepare", workdir=workdir, project=key[1], manifest=True, for_run=for_run,
                   known=known_token(agent, key))
        try:
            if entries is None:
                selection = selection if selection is not None else select_project(project_root, include)
                entries = selection.entries
        finally:
            manifest = completed(agent, key, prepared(agent, out))  # read even when the scan failed: in step
        try:
            return sync_planned(agent, project_root, entries, manifest, out, force,
                                selection_lines(selection) if selection is not None else [], key)
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
                 extra_lines: list, key: tuple) -> SyncResult:
    """extra_lines: besides the summary, what the beside-rule added and what the ignore rules left out."""
    project_dir, stage = manifest["project_dir"], manifest.get("stage")
    plan = planned(agent, key, entries, manifest, force, lambda: plan_sync(
        entries, manifest["present"], manifest["synced"], lambda path: os.path.lexists(project_root / path),
        manifest.get("changed", ()), force, manifest.get("refused", ())))
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
    written_before = agent.written_bytes
    applied, pending = apply_plan(agent, project_root, project_dir, plan, out, host_digests=host_digests,
                                  deltas=deltas, paths=[e.path for e in entries], force=force)
    applied, pending = resend_whole(agent, project_root, project_dir, plan, out, applied, pending, force)
    kept = plan.kept + applied.get("kept", [])
    say_kept(kept, agent.label, out)
    if pending:
        raise OffloadError(f"{pending[0].path} kept changing while it was being sent; it was not synced",
                           hint="stop whatever writes it, or add it to .offloadignore")
    return SyncResult(project_dir, applied["written"], applied["bytes"], applied["deleted"], plan.unchanged, stage, kept,
                      agent.written_bytes - written_before, applied.get("compressed_with"))


def resend_whole(agent, project_root: Path, project_dir: str, plan: SyncPlan, out, applied: dict, pending: list,
                 force: bool) -> tuple:
    """The files whose base on the host would not do (it changed behind offload's back): sent again whole, in
    a second apply; the tallies of both, added up."""
    resend = set(applied.get("resend", ()))
    if not resend:
        return applied, pending
    again, still = apply_plan(agent, project_root, project_dir, SyncPlan(send=[e for e in plan.send if e.path in resend]),
                              out, force=force)
    total = {key: applied[key] + again[key] for key in ("written", "bytes", "deleted")}
    return {**applied, **total, "kept": applied.get("kept", []) + again.get("kept", [])}, pending + still


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
    one round trip for the digests, then each local file is hashed to find the blocks that differ. A big file
    that would go whole is looked for among the host's other files (bases.py): one more round trip."""
    big = [e.path for e in plan.send if e.kind == "file" and e.size >= DELTA_MIN_BYTES]
    candidates = [path for path in big if (present.get(path) or [None])[0] == "file" and present[path][1] > 0]
    host_digests, deltas = {}, {}
    if candidates:
        reply = agent.request("blocks", project_dir=project_dir, paths=candidates)
        blob, offset = b"".join(agent.read_blob(int(reply["size"]))), 0
        for path, count in reply["found"]:
            host_digests[path] = blob[offset:offset + count * DIGEST_BYTES]
            offset += count * DIGEST_BYTES
        deltas = {path: plan_delta(project_root / path, digests) for path, digests in host_digests.items()}
        deltas = {path: delta for path, delta in deltas.items() if delta is not None}
    whole = [path for path in big if path not in deltas]  # the host may have their content at other paths
    if whole:
        deltas.update(plan_based(agent, project_root, project_dir, whole))
    return host_digests, deltas


def check_free_space(label: str, plan: SyncPlan, free_bytes: int, deltas: dict | None = None) -> None:
    total = bytes_to_send(plan.send, deltas or {})
    total += sum(d.size - d.wire_bytes for d in (deltas or {}).values() if d.base is not None)  # a new file each
    if total > free_bytes:
        raise OffloadError(f"not enough disk on {label}: {human_size(total)} to send, {human_size(free_bytes)} free",
                           hint=DISK_HINT)


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
            if name.endswith(PART_SUFFIX):
                continue  # an interrupted fetch's leftovers are not files of the run
            path = Path(directory) / name
            st = path.lstat()
            if path.is_file() and not path.is_symlink():
                found.append(LocalEntry(path.relative_to(root).as_posix(), "file", st.st_size, st.st_mtime_ns,
                                        st.st_mode & 0o7777))
    return sorted(found, key=lambda e: e.path)
