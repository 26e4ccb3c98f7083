"""The agent stands alone on the host, and speaks one protocol with the laptop: every module it ships is Python 3.8
and standard library only (the probes that import torch run only as subprocesses), and every message the laptop
sends is one that remote_agent/protocol.py defines."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from offload.transport.agent import AGENT_DIR, agent_files
from remote_agent import protocol

ROOT = Path(__file__).resolve().parent.parent
PROBES = {"remote_agent.torch_probe", "remote_agent.matmul_probe"}  # `python -m` in a subprocess (probe.py)
ADDED_AFTER_38 = {"removeprefix", "removesuffix"}  # str methods Python 3.8 lacks (3.9 added them)


def shipped() -> list:
    return [AGENT_DIR / relative for relative in agent_files()]


def module_name(path: Path) -> str:
    return "remote_agent." + ".".join(path.relative_to(AGENT_DIR).with_suffix("").parts)


def imported_modules(tree: ast.AST, package: str) -> set:
    """Absolute names of what a module imports (`from . import x` resolved against its package)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                names = [f"{base}.{node.module}"] if node.module else [f"{base}.{alias.name}" for alias in node.names]
                found.update(names)
            else:
                found.add(node.module)
    return found


def test_the_agent_ships_every_module_of_its_own():
    names = {path.name for path in shipped()}
    assert {p.name for p in AGENT_DIR.glob("*.py")} <= names and "offload_metrics.py" in names


@pytest.mark.parametrize("path", shipped(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_shipped_module_is_python_38(path):
    source = path.read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    newer_methods = sorted({node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} & ADDED_AFTER_38)
    assert not newer_methods, f"Python 3.8 has no {newer_methods}"
    future = any(isinstance(node, ast.ImportFrom) and node.module == "__future__" and
                 any(alias.name == "annotations" for alias in node.names) for node in tree.body)
    late = [ast.unparse(annotation) for annotation in annotations(tree) if newer_than_38(annotation)]
    assert future or not late, f"{late} need `from __future__ import annotations` on Python 3.8"


def annotations(tree: ast.AST) -> list:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            found += [arg.annotation for arg in arguments if arg.annotation] + ([node.returns] if node.returns else [])
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return found


def newer_than_38(annotation: ast.AST) -> bool:
    """`X | None` and `list[str]`: Python 3.8 evaluates neither (unless annotations stay strings)."""
    return any((isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)) or
               (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and
                node.value.id in ("list", "dict", "tuple", "set", "frozenset", "type"))
               for node in ast.walk(annotation))


@pytest.mark.parametrize("path", [p for p in shipped() if p.parent == AGENT_DIR],
                         ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_agent_module_imports_the_standard_library_only(path):
    name = module_name(path)
    imported = imported_modules(ast.parse(path.read_text()), "remote_agent")
    outside = {module for module in imported if module.split(".")[0] not in sys.stdlib_module_names | {"__future__"}
               and not module.startswith("remote_agent")}
    # codecs.py decodes zstd with compression.zstd (the standard library from Python 3.14) or the host's own
    # zstandard, each imported only where the host's Python has it (else zlib)
    allowed = {"torch"} if name in PROBES else {"compression", "zstandard"} if name == "remote_agent.codecs" else set()
    assert outside <= allowed, outside
    assert not imported & PROBES, "a probe imports torch: it runs as a subprocess, never imported"


def laptop_messages() -> dict:
    """message type -> where the laptop sends it: every `X.send("type", ...)`, `X.request("type", ...)` and
    `protocol.encode("type", ...)` in offload/."""
    found = {}
    for path in sorted((ROOT / "offload").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("send", "request", "encode") and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.setdefault(node.args[0].value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_message_the_laptop_sends_is_defined_in_the_protocol():
    sent = laptop_messages()
    assert {"prepare", "apply", "put", "end", "start", "follow"} <= set(sent)  # the scan sees the laptop's calls
    unknown = {kind: where for kind, where in sent.items()
               if kind not in protocol.REQUESTS and kind not in protocol.ENTRIES + protocol.FOLLOW_INPUT and kind != "end"}
    assert not unknown, f"messages the agent does not know: {unknown}"
