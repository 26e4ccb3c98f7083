"""The laptop's record of runs: .offload/runs/<run-id>/ with output.log and meta.json."""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

RUNS_DIR = Path(".offload") / "runs"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunRecord:
    def __init__(self, project_root: Path, run_id: str):
        self.run_id = run_id
        self.dir = project_root / RUNS_DIR / run_id
        self.meta = {}

    @property
    def log_path(self) -> Path:
        return self.dir / "output.log"

    def create(self, **meta) -> None:
        self.dir.mkdir(parents=True, exist_ok=False)
        self.meta = {"run_id": self.run_id, "started_at": timestamp(), "ended_at": None, "exit_code": None, **meta}
        self.save()

    def update(self, **changes) -> None:
        self.meta.update(changes)
        self.save()

    def save(self) -> None:
        path = self.dir / "meta.json"
        tmp = path.with_name("meta.json.tmp")
        tmp.write_text(json.dumps(self.meta, indent=2) + "\n")
        os.replace(tmp, path)
