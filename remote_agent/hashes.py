"""SHA-256s of project files on the host, cached by (real path, size, mtime_ns, inode) in
<project>/.offload/fetch-hashes.json, so a large checkpoint is read once: by the supervisor when the run that
wrote it ends (see outputs.py), or by the first fetch of it."""
from __future__ import annotations

import hashlib
import json
import os
import time

from . import protocol

CACHE_FILE = os.path.join(".offload", "fetch-hashes.json")
RACY_S = 2.0  # a file modified this recently can change again within one mtime tick: its hash is not cached


class HashCache:
    """SHA-256s by (real path, size, mtime_ns, inode), kept in the project on the host."""

    def __init__(self, root: str):
        self.path = os.path.join(root, CACHE_FILE)
        try:
            with open(self.path) as f:
                self.entries = dict(json.load(f)["entries"])
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}
        self.changed = False

    def sha256(self, real: str, tick) -> str:
        before = os.stat(real)
        key = [before.st_size, before.st_mtime_ns, before.st_ino]
        cached = self.entries.get(real)
        if isinstance(cached, list) and cached[:3] == key:
            return cached[3]
        digest = file_sha256(real, tick)
        after = os.stat(real)
        settled = time.time() - after.st_mtime > RACY_S
        if settled and [after.st_size, after.st_mtime_ns, after.st_ino] == key:  # not written while we read it
            self.remember(real, key, digest)
        return digest

    def remember(self, real: str, key: list, digest: str) -> None:
        """Cache a digest of the file as `key` ([size, mtime_ns, inode]) says it was when it was read."""
        self.entries[real] = list(key) + [digest]
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        kept = {path: entry for path, entry in self.entries.items() if os.path.isfile(path)}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(tmp, "w") as f:
                json.dump({"entries": kept}, f)
            os.replace(tmp, self.path)
        except OSError:  # a cache that cannot be written only costs a rehash next time
            try:
                os.unlink(tmp)
            except OSError:
                pass


def file_sha256(path: str, tick=lambda: None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            piece = f.read(protocol.CHUNK)
            if not piece:
                return digest.hexdigest()
            digest.update(piece)
            tick()
