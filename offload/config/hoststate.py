"""What offload learnt about each host: its device facts (from the last run or check) and its measured
matmul ceiling (`hosts check NAME --bench`). A JSON file next to hosts.yaml; "local" is this machine."""
from __future__ import annotations

import json
import os

from offload import paths as home

LOCAL = "local"


def state_file():
    return home.config_dir() / "host-state.json"


def load() -> dict:
    try:
        data = json.loads(state_file().read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def get(name: str) -> dict:
    return load().get(name, {})


def remember(name: str, **fields) -> None:
    data = load()
    data.setdefault(name, {}).update(fields)
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
