"""Why the link keeper can hand each command its own stdin, stdout and stderr: no module of offload's holds on
to the standard streams it found at import, so every write and read looks them up when it happens."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STREAMS = ("stdin", "stdout", "stderr")


def names_a_standard_stream(node: ast.AST) -> bool:
    """sys.stdout, sys.stderr.buffer, sys.stdin.readline, ..."""
    while isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "sys" and node.attr in STREAMS:
            return True
        node = node.value
    return False


def bound_early(tree: ast.Module) -> list:
    """Where a standard stream is evaluated once, at import or definition time: a default argument, or a
    statement at module or class level."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            defaults = [d for d in node.args.defaults + node.args.kw_defaults if d is not None]
            found += [f"line {node.lineno}: default {ast.unparse(d)}" for d in defaults
                      if any(names_a_standard_stream(n) for n in ast.walk(d))]
    bodies = [tree.body] + [node.body for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    for body in bodies:
        for statement in body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue  # their bodies run when called; their defaults are checked above
            if any(names_a_standard_stream(n) for n in ast.walk(statement)):
                found.append(f"line {statement.lineno}: {ast.unparse(statement)[:80]}")
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "offload").rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_binds_a_standard_stream_at_import_or_definition_time(path):
    early = bound_early(ast.parse(path.read_text()))
    assert not early, f"{path.relative_to(ROOT)}: {'; '.join(early)} (look the stream up where it is used)"


@pytest.mark.parametrize("source", ["import sys\ndef say(text, out=sys.stderr):\n    print(text, file=out)\n",
                                    "import sys\nOUT = sys.stdout.buffer\n",
                                    "import sys\nclass Sink:\n    terminal = sys.stdout\n"])
def test_the_check_sees_each_way_of_binding_one(source):
    assert bound_early(ast.parse(source))


def test_the_check_leaves_streams_looked_up_when_used_alone():
    source = ("import sys\ndef say(text, out=None):\n    print(text, file=out or sys.stderr)\n"
              "class Sink:\n    def __init__(self, terminal=None):\n        self.terminal = terminal or sys.stdout.buffer\n")
    assert bound_early(ast.parse(source)) == []
