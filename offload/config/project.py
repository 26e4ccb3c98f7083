"""The project's own settings: an optional `offload.yaml` at the project root, read as carefully as hosts.yaml.

    setup: pip install -r requirements.txt   # run on the host before a job, when its inputs changed
    setup_inputs: [requirements.txt, deps/*.txt]  # globs from the project root (default: see setup.py)
    include: ['out/**', data/cache/tokens.bin]     # sent whatever the ignore rules say (see selection.py)
    data_budget: 500MB                             # git-ignored files sent beside synced ones (default 2GiB)
    ports: [6006, "8888:8889"]                     # forwarded while a run is followed (config/ports.py)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from offload.errors import OffloadError
from offload.config.hosts import key_node, load_yaml
from offload.config.ports import parse_forward

FILE_NAME = "offload.yaml"
HINT = ("fix offload.yaml at the project root; its keys are `setup` (a shell command), `setup_inputs` (a list of "
        "globs), `include` (a list of patterns), `data_budget` (a size such as 500MB or 2GiB), `on_exit` (a shell "
        "command) and `ports` (a list of ports such as [6006, \"8888:8889\"])")
KEYS = "setup, setup_inputs, include, data_budget, on_exit, ports"
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
              "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


@dataclass(frozen=True)
class ProjectConfig:
    setup: str | None = None          # shell text run on each host before a job (see setup.py)
    setup_inputs: tuple | None = None  # globs whose files key the setup; None: setup.DEFAULT_INPUTS
    include: tuple | None = None       # patterns sent whatever the ignore rules say
    data_budget: int | None = None     # bytes; None: selection.DEFAULT_DATA_BUDGET
    on_exit: str | None = None         # shell text the host's supervisor runs after the job (on_exit.py)
    ports: tuple = ()                  # config/ports.PortForward each: forwarded while a run is followed


def load(project_root: Path) -> ProjectConfig:
    path = project_root / FILE_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ProjectConfig()
    except OSError as exc:
        raise OffloadError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise OffloadError(f"{path} is not UTF-8 text", hint=HINT) from None
    return parse(text, str(path))


def parse(text: str, filename: str) -> ProjectConfig:
    root, data = load_yaml(text, filename, hint=HINT)
    if data is None:
        return ProjectConfig()

    def fail(key, message: str):
        node = key_node(root, key) if key is not None else root
        line = node.start_mark.line + 1 if node is not None else 1
        raise OffloadError(f"{filename}:{line}: {message}", hint=HINT)

    if not isinstance(data, dict):
        fail(None, f"expected a mapping of settings ({KEYS})")
    for key, value in data.items():
        problem = check_field(key, value)
        if problem:
            fail(key, problem)
    inputs, include = data.get("setup_inputs"), data.get("include")
    return ProjectConfig(setup=data.get("setup"), setup_inputs=tuple(inputs) if inputs is not None else None,
                         include=tuple(include) if include is not None else None,
                         data_budget=parse_size(data["data_budget"]) if "data_budget" in data else None,
                         on_exit=data.get("on_exit"),
                         ports=tuple(parse_forward(spec, "ports:") for spec in data.get("ports") or ()))


def parse_size(value) -> int | None:
    """Bytes from 1000, "500MB", "1.5 GB" or "2GiB" (kB/MB/GB/TB decimal, KiB/MiB/GiB/TiB binary); None if not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        return None
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])


def check_field(key, value) -> str | None:
    """What is wrong with one setting, or None."""
    texts = value if isinstance(value, list) else [value]
    nul = next((text for text in texts if isinstance(text, str) and "\0" in text), None)
    if key in ("setup", "setup_inputs", "include", "on_exit") and nul is not None:  # it would stop the job's supervisor
        return f"{key}: {nul!r} contains a NUL character: remove it"
    if key in ("setup", "on_exit"):
        if not isinstance(value, str) or not value.strip():
            return f"{key} must be a shell command (text), not {value!r}"
    elif key == "setup_inputs":
        if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
            return f"setup_inputs must be a list of glob patterns such as [requirements.txt, deps/*.txt], not {value!r}"
        outside = [p for p in value if p.startswith("/") or ".." in p.split("/")]
        if outside:
            return f"setup_inputs: {outside[0]!r} is outside the project; use a glob relative to the project root"
    elif key == "include":
        if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
            return f"include must be a list of patterns such as ['out/**', data/tokens.bin], not {value!r}"
        bad = [p for p in value if p.strip().startswith(("!", "#")) or ".." in p.split("/")]
        if bad:
            return f"include: {bad[0]!r} cannot be sent; use a pattern relative to the project root, without ! or #"
    elif key == "ports":
        if not isinstance(value, list):
            return f"ports must be a list of ports such as [6006, \"8888:8889\"], not {value!r}"
        for spec in value:
            try:
                parse_forward(spec, "ports:")
            except OffloadError as exc:
                return exc.message
    elif key == "data_budget":
        if parse_size(value) is None:
            return f"data_budget must be a size in bytes or such as 500MB or 2GiB, not {value!r}"
    else:
        return f"unknown key {key!r} (known: {KEYS})"
    return None
