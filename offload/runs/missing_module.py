"""A run that failed with ModuleNotFoundError: which module, and where it is. In the project (then how the host's
python can import it), installed on the laptop but not on the host (then the exact `setup:` line for
offload.yaml), or missing everywhere.

The laptop's side is asked of the pythons a user would have run the script with: the active virtualenv's, then
`python3` and `python` on PATH, then offload's own; the first that can import the module answers.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from offload.console import say

NO_MODULE = re.compile(r"ModuleNotFoundError: No module named '(?P<name>[^'\n]+)'")
PROBE_TIMEOUT_S = 20
SKIPPED_DIRS = {"venv", "node_modules", "__pycache__", "site-packages"}  # another environment's copy is not its own
MAX_DEPTH = 8
# Run by each laptop python with the module's name: where the module is, and the distributions that ship it.
PROBE = """import importlib.util, json, sys
name = sys.argv[1]
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # the probe's cwd is no place the module is installed
try:
    spec = importlib.util.find_spec(name)
except (ImportError, ValueError):
    spec = None
found = {}
if spec is not None:
    where = spec.origin if spec.origin not in (None, "namespace") else None
    found = {"where": where or next(iter(spec.submodule_search_locations or []), None), "dists": []}
    try:
        from importlib.metadata import packages_distributions, version
        found["dists"] = [[dist, version(dist)] for dist in packages_distributions().get(name, [])]
    except Exception:
        pass
print(json.dumps(found))
"""


@dataclass(frozen=True)
class LaptopModule:
    python: str         # the laptop python that imports it
    where: str | None   # its file or directory there
    dists: list         # [[distribution, version], ...] that ship it (none for a module on the path by hand)


def missing_module(output: str) -> str | None:
    """The top-level module of the last `No module named 'X'` in the output (`mingpt` of 'mingpt.model')."""
    names = [match.group("name") for match in NO_MODULE.finditer(output)]
    return names[-1].split(".")[0] if names else None


def laptop_pythons() -> list:
    candidates = [os.path.join(os.environ["VIRTUAL_ENV"], "bin", "python") if os.environ.get("VIRTUAL_ENV") else None,
                  shutil.which("python3"), shutil.which("python"), sys.executable]
    seen = []
    for path in candidates:
        if path and os.path.exists(path) and path not in seen:
            seen.append(path)
    return seen


def find_on_laptop(name: str, pythons: list) -> LaptopModule | None:
    for python in pythons:
        try:
            done = subprocess.run([python, "-c", PROBE, name], capture_output=True, text=True, cwd="/",
                                  timeout=PROBE_TIMEOUT_S)
            lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
            found = json.loads(lines[-1]) if lines else {}
        except (OSError, subprocess.TimeoutExpired, ValueError):
            continue
        if found:
            return LaptopModule(python, found.get("where"), found.get("dists") or [])
    return None


def in_project(name: str, root: Path) -> str | None:
    """The project's own copy of the module (a package directory or a .py file), as a path from its root: the
    shallowest, outside hidden directories, virtualenvs and caches."""
    found = []
    for directory, subdirs, files in os.walk(root):
        here = Path(directory).relative_to(root)
        deeper = len(here.parts) < MAX_DEPTH
        subdirs[:] = [d for d in subdirs if deeper and not d.startswith(".") and d not in SKIPPED_DIRS]
        if f"{name}.py" in files:
            found.append((here / f"{name}.py").as_posix())
        if name in subdirs and (Path(directory) / name / "__init__.py").is_file():
            found.append((here / name).as_posix())
    return min(found, key=lambda path: (path.count("/"), path)) if found else None


def inside(path: str | None, root: Path) -> str | None:
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def explain_missing_module(name: str, host: str, root: Path, sent_paths, laptop: LaptopModule | None) -> str:
    """The one line: where `name` is, and what makes the host's python import it."""
    own = inside(laptop.where, root) if laptop else None
    own = own or in_project(name, root)
    if own is not None and not any(path == own or path.startswith(own + "/") for path in sent_paths):
        return (f"the run needs module {name}, which is in the project ({own}) but was not sent to {host} (an ignore "
                f"rule left it out): send it with --include '{own}/**' (or `include:` in offload.yaml)")
    if own is not None:
        installable = (root / "pyproject.toml").exists() or (root / "setup.py").exists()
        fix = ("install the project there, in offload.yaml: `setup: $OFFLOAD_PYTHON -m pip install -q -e .`"
               if installable else "put its parent directory on PYTHONPATH in the host's env (hosts.yaml)")
        return (f"the run needs module {name}, which is in the project ({own}) but not importable from the "
                f"project's root on {host}: {fix}")
    if laptop is not None:
        dist, version = laptop.dists[0] if laptop.dists else (name, None)
        requirement = f"{dist}=={version}" if version else dist
        return (f"the run needs module {name}, which is installed on the laptop ({requirement}, for {laptop.python}) "
                f"but not on {host}; install it there with this line in offload.yaml: "
                f"`setup: $OFFLOAD_PYTHON -m pip install -q {requirement}`")
    return (f"the run needs module {name}, which is neither in the project nor installed on the laptop or on "
            f"{host}: check its name, or install it on {host} with a `setup:` line in offload.yaml")


def diagnose_missing_module(output: str, host: str, root: Path, sent_paths) -> str | None:
    """After a failed run: the module its output says is missing, explained and said; None when there is none."""
    name = missing_module(output)
    if name is None:
        return None
    message = explain_missing_module(name, host, root, sent_paths, find_on_laptop(name, laptop_pythons()))
    say(message)
    return message
