"""The manifests this agent last sent, by project directory: when a sync would find exactly what it sent before
(the laptop names that one by its token), the reply says so instead of carrying 100,000 entries again.

Exactly: where an inotify watch (tree_watch.py) saw no change in the project's directories and the records are
the file they were, the manifest is not even built; otherwise it is built from the disk and compared. The
memo lives as long as the agent, as the laptop's copy lives as long as its link to this agent.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from . import manifest
from .records import PENDING_FILE, STATE_FILE, file_key
from .tree_watch import TreeWatch

MAX_WATCHED = 4  # projects one agent keeps a watch on (each is an inotify instance of the user's 128)

_tokens = itertools.count(1)


@dataclass
class Sent:
    token: str
    found: dict
    watch: TreeWatch | None
    records_key: tuple


class ManifestMemo:
    def __init__(self):
        self.sent: dict = {}  # project_dir -> Sent

    def reply(self, project_dir: str, target, known: str | None) -> dict:
        """The fields of the `prepared` reply: `manifest_same` where the laptop holds the manifest already,
        else the manifest and the token that names it from now on."""
        sent = self.sent.pop(project_dir, None)
        holds = known is not None and sent is not None and known == sent.token
        if (holds and target.live and sent.watch is not None and sent.records_key == records_key(project_dir)
                and sent.watch.quiet()):
            self.sent[project_dir] = sent
            return {"manifest_same": sent.token}
        if sent is not None and sent.watch is not None:
            sent.watch.close()
        watch = TreeWatch.start(project_dir, directories(target)) if target.live else None  # before the build
        key = records_key(project_dir)
        found = manifest.manifest(target)
        same = holds and sent.found == found
        token = sent.token if same else f"{os.getpid()}-{next(_tokens)}"
        self.remember(project_dir, Sent(token, found, watch, key))
        return {"manifest_same": token} if same else {**found, "manifest_token": token}

    def remember(self, project_dir: str, sent: Sent) -> None:
        self.sent[project_dir] = sent
        watched = [name for name, kept in self.sent.items() if kept.watch is not None]
        for name in watched[:-MAX_WATCHED]:  # the least recently used first
            self.sent[name].watch.close()
            self.sent[name].watch = None


def records_key(project_dir: str) -> tuple:
    return (file_key(os.path.join(project_dir, STATE_FILE)), os.path.lexists(os.path.join(project_dir, PENDING_FILE)))


def directories(target) -> set:
    """Every directory that holds a synced path, up to the project's: a change to what manifest.py describes
    (a file's size or mode, a directory's entries, a parent renamed) raises an event on one of them."""
    found = set()
    for relpath in target.records.paths:
        parts = relpath.split("/")
        for depth in range(len(parts) - 1, 0, -1):
            parent = "/".join(parts[:depth])
            if parent in found:
                break
            found.add(parent)
    synced_dirs = {relpath for relpath, record in target.records.paths.items() if record and record[0] == "dir"}
    return {os.path.join(target.root, *relpath.split("/")) for relpath in found | synced_dirs}
