"""The manifests this agent last sent, by project directory: when a sync finds exactly what it sent before
(the laptop names that one by its token), the reply says so instead of carrying 100,000 entries again.

The manifest is always built anew from the disk (manifest.py); only its sending is saved. The memo lives as
long as the agent, as the laptop's copy lives as long as its link to this agent.
"""
from __future__ import annotations

import itertools
import os

_tokens = itertools.count(1)


class ManifestMemo:
    def __init__(self):
        self.sent: dict = {}  # project_dir -> (token, manifest)

    def reply(self, project_dir: str, found: dict, known: str | None) -> dict:
        """The fields of the `prepared` reply for found: `manifest_same` where the laptop holds it already,
        else the manifest and the token that names it from now on."""
        token, last = self.sent.get(project_dir, (None, None))
        if known is not None and known == token and last == found:
            return {"manifest_same": token}
        token = f"{os.getpid()}-{next(_tokens)}"
        self.sent[project_dir] = (token, found)
        return {**found, "manifest_token": token}
