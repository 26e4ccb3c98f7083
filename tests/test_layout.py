"""The shape of the code, checked like its behaviour: small modules, short functions, CamelCase classes, and no
import hidden inside a function unless start-up time needs it there (the import contracts themselves are
`lint-imports`, which `make test` runs: .importlinter)."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("offload", "remote_agent")
MODULE_MAX_LINES = 300
FUNCTION_MAX_LINES = 50
LAZY_MARK = "lazy:"  # the comment a function-level import carries: `# lazy: <why start-up time needs it>`


def modules() -> list:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_the_layout_checks_see_the_code():
    names = {relative(path) for path in modules()}
    assert "offload/runs/job.py" in names and "remote_agent/protocol.py" in names


@pytest.mark.parametrize("path", modules(), ids=relative)
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MODULE_MAX_LINES, f"{relative(path)} has {lines} lines: split it by job"


@pytest.mark.parametrize("path", modules(), ids=relative)
def test_functions_stay_short(path):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in functions(parsed(path)) if node.end_lineno - node.lineno + 1 > FUNCTION_MAX_LINES]
    assert not long, f"{relative(path)}: {', '.join(long)}"


@pytest.mark.parametrize("path", modules(), ids=relative)
def test_class_names_are_camel_case(path):
    bad = [node.name for node in ast.walk(parsed(path))
           if isinstance(node, ast.ClassDef) and not (node.name[:1].isupper() and "_" not in node.name.strip("_"))]
    assert not bad, f"{relative(path)}: {', '.join(bad)}"


@pytest.mark.parametrize("path", [path for path in modules() if relative(path).startswith("offload/")], ids=relative)
def test_imports_inside_functions_say_why(path):
    """An import inside a function must be there for start-up time (`offload --help`, the keeper's client), and
    say so; one that dodges an import cycle is a layering bug (.importlinter)."""
    lines = path.read_text().splitlines()
    silent = []
    for function in functions(parsed(path)):
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and LAZY_MARK not in lines[node.lineno - 1]:
                silent.append(f"line {node.lineno} in {function.name}")
    assert not silent, f"{relative(path)}: imports inside functions without a `# {LAZY_MARK} ...` comment: {', '.join(silent)}"


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module, planted", [
    ("offload/errors.py", "import offload.cli.app\n"),           # layer 0 reaching up to the CLI
    ("offload/mfu/report.py", "import offload.transport.link\n"),  # mfu and transport are siblings that never meet
    ("remote_agent/protocol.py", "import yaml\n"),              # the agent takes nothing but the standard library
])
def test_the_import_contracts_break_the_build_when_a_layer_imports_upward(tmp_path, module, planted):
    """`make test` runs lint-imports first: it passes on the code as it is, and fails on each planted import."""
    tree = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tree)
    assert lint_imports(tree).returncode == 0, lint_imports(tree).stdout
    (tree / module).write_text((tree / module).read_text() + planted)
    broken = lint_imports(tree)
    assert broken.returncode != 0 and "BROKEN" in broken.stdout
