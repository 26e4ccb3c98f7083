"""What a sync changes on the host, decided from plain data: rsync's quick check, and what is ours to delete.

A file is up to date on the host when kind, size, mtime (to the nanosecond) and permission bits match,
as rsync's quick check decides; the agent sets each file's mtime to the laptop's after writing it.
Deletions touch only paths an earlier sync put there and that are gone locally; a synced path the host
changed is kept (or, with --force, replaced), and one the laptop now ignores is forgotten, never deleted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from remote_agent.protocol import CHANGED_ON_HOST

from offload.sync.scan import LocalEntry


@dataclass
class SyncPlan:
    send: list = field(default_factory=list)    # LocalEntry objects
    delete: list = field(default_factory=list)  # paths a sync put there and that are gone locally
    forget: list = field(default_factory=list)  # synced paths now excluded locally: kept, no longer ours
    kept: list = field(default_factory=list)    # [path, why]: changed on the host, left alone
    replace: list = field(default_factory=list)  # [path, why]: changed on the host, replaced by --force
    adopt: list = field(default_factory=list)    # the laptop's very file, but not as recorded: recorded again
    unchanged: int = 0


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
