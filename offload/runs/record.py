"""The laptop's record of runs: .offload/runs/<run-id>/ with output.log and meta.json."""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from offload.errors import OffloadError

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
        self.meta = {"run_id": self.run_id, "started_at": timestamp(), "started_unix": round(time.time(), 3),
                     "ended_at": None, "exit_code": None, **meta}
        self.save()

    def end(self, **changes) -> None:
        """Record that the run ended (when, and how: exit code, signal, state, ...)."""
        self.update(ended_at=timestamp(), ended_unix=round(time.time(), 3), **changes)

    def update(self, **changes) -> None:
        self.meta.update(changes)
        self.save()

    def save(self) -> None:
        path = self.dir / "meta.json"
        tmp = path.with_name("meta.json.tmp")
        tmp.write_text(json.dumps(self.meta, indent=2) + "\n")
        os.replace(tmp, path)


def load_runs(project_root: Path) -> list:
    """Every run recorded in this project, oldest first by start time (run ids of the same second are not
    in order); meta.json that cannot be read is skipped."""
    found = []
    for meta_path in sorted((project_root / RUNS_DIR).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and "run_id" in meta:
            found.append(meta)
    return sorted(found, key=lambda meta: (meta.get("started_unix") or 0, meta["run_id"]))


def duration_s(meta: dict) -> float | None:
    started, ended = meta.get("started_unix"), meta.get("ended_unix")
    return round(ended - started, 1) if started and ended else None


def project_root_of(options_project: Path | None) -> Path:
    root = Path(options_project or Path.cwd()).resolve()
    if not root.is_dir():
        raise OffloadError(f"project directory {root} does not exist")
    return root
