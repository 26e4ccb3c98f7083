"""The project's own settings: an optional `offload.yaml` at the project root, read as carefully as hosts.yaml.

    setup: pip install -r requirements.txt   # run on the host before a job, when its inputs changed
    setup_inputs: [requirements.txt, deps/*.txt]  # globs from the project root (default: see setup.py)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import OffloadError
from .hosts import key_node, load_yaml

FILE_NAME = "offload.yaml"
HINT = "fix offload.yaml at the project root; its keys are `setup` (a shell command) and `setup_inputs` (a list of globs)"


@dataclass(frozen=True)
class ProjectConfig:
    setup: str | None = None          # shell text run on each host before a job (see setup.py)
    setup_inputs: tuple | None = None  # globs whose files key the setup; None: setup.DEFAULT_INPUTS


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
        fail(None, "expected a mapping of settings (setup, setup_inputs)")
    for key, value in data.items():
        problem = check_field(key, value)
        if problem:
            fail(key, problem)
    inputs = data.get("setup_inputs")
    return ProjectConfig(setup=data.get("setup"), setup_inputs=tuple(inputs) if inputs is not None else None)


def check_field(key, value) -> str | None:
    """What is wrong with one setting, or None."""
    if key == "setup":
        if not isinstance(value, str) or not value.strip():
            return f"setup must be a shell command (text), not {value!r}"
    elif key == "setup_inputs":
        if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
            return f"setup_inputs must be a list of glob patterns such as [requirements.txt, deps/*.txt], not {value!r}"
        outside = [p for p in value if p.startswith("/") or ".." in p.split("/")]
        if outside:
            return f"setup_inputs: {outside[0]!r} is outside the project; use a glob relative to the project root"
    else:
        return f"unknown key {key!r} (known: setup, setup_inputs)"
    return None
