"""The last setup that succeeded in a project directory on the host: `.offload/setup.json`.

The laptop decides whether setup runs (see offload/runs/setup.py); the host only keeps what it was told, next to
the project it describes, so that every laptop using this directory sees the same record.
"""
from __future__ import annotations

import json
import os

from . import durable, host_dirs
from .protocol import RequestError

STATE = os.path.join(".offload", "setup.json")


def state_path(project_dir: str) -> str:
    return os.path.join(host_dirs.project_dir(project_dir), STATE)


def get(project_dir: str) -> dict:
    """The recorded setup ({} when none, or when the file is unreadable: setup then simply runs again)."""
    try:
        with open(state_path(project_dir)) as f:
            state = json.load(f)
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def put(project_dir: str, state: dict) -> dict:
    if not isinstance(state, dict) or not isinstance(state.get("key"), str):
        raise RequestError("bad_request", f"a setup record needs a key, not {state!r}")
    path = state_path(project_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    durable.write_json_durably(path, state)
    return state
