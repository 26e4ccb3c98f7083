"""A run that failed for want of a file the laptop has but did not send: which file, which rule left it out,
and the command that sends it. (For want of a module: missing_module.py.)

The output is read as Python and numpy print it (tests/data/missing-files/ holds real recordings):
`FileNotFoundError: [Errno 2] No such file or directory: 'data/x/train.bin'` (open, pickle, np.memmap, np.load,
torch.load all end there), numpy's own `FileNotFoundError: data/labels.txt not found.`, and the bare
`No such file or directory: 'X'` other errors carry.
"""
from __future__ import annotations

import ast
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from offload.console import say
from offload.runs.missing_module import diagnose_missing_module
from offload.sync.ignore import explain
from offload.sync.selection import budget_text, is_secret

QUOTED_MISSING = re.compile(r"No such file or directory: (?P<path>'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")")
NUMPY_MISSING = re.compile(r"(?:FileNotFoundError|OSError|IOError): (?P<path>[^\n]+?) not found\.[ \t]*$", re.M)


@dataclass(frozen=True)
class Missing:
    path: str           # relative to the project root
    reason: str         # the ignore rule (explain()) or "over the ... data budget"
    command_line: list  # `offload`'s arguments with `--include PATH` added
    message: str        # the one line to show


def missing_paths(output: str) -> list[str]:
    """Every path the output says is missing, in the order it says so."""
    found = []
    for match in QUOTED_MISSING.finditer(output):
        try:
            found.append((match.start(), ast.literal_eval(match.group("path"))))
        except (ValueError, SyntaxError):  # not a whole Python literal (a cut line): not a path we can trust
            continue
    found += [(match.start(), match.group("path")) for match in NUMPY_MISSING.finditer(output)]
    return [path for _, path in sorted(found)]


def project_relpath(path: str, host_project_dir: str) -> str | None:
    """The path relative to the project (the job's cwd is the project dir on the host), or None outside it."""
    if path.startswith("/"):
        prefix = host_project_dir.rstrip("/") + "/"
        if not path.startswith(prefix):
            return None
        path = path[len(prefix):]
    normalized = posixpath.normpath(path)
    if normalized in (".", "..") or normalized.startswith(("../", "/")):
        return None
    return normalized


def with_include(command_line: list, script: str, args: list, path: str) -> list:
    """The same `offload` arguments with `--include PATH` right before SCRIPT (at the end when SCRIPT was not
    typed, as with --resume RUN)."""
    script_at = len(command_line) - len(args) - 1
    if script_at >= 1 and command_line[script_at] == script and command_line[script_at + 1:] == list(args):
        return [*command_line[:script_at], "--include", path, *command_line[script_at:]]
    return [*command_line, "--include", path]


def find_missing(output: str, host_project_dir: str, root: Path, selection, host: str, command_line: list,
                 script: str, args: list) -> Missing | None:
    """The last missing path the output names that is a file of the project the sync did not send."""
    sent = {entry.path for entry in selection.entries}
    over_budget = {entry.path for entry in selection.over_budget}
    for raw in reversed(missing_paths(output)):
        relpath = project_relpath(raw, host_project_dir)
        if relpath is None or relpath in sent or not (root / relpath).is_file():
            continue
        if relpath in over_budget:
            reason = f"over the {budget_text(selection.data_budget)} data budget"
        else:
            reason = f"excluded by {explain(root, relpath) or 'an ignore rule'}"
            if is_secret(relpath.rpartition("/")[2]):
                reason += "; it looks like a secret, which offload sends only when included"
        command = with_include(command_line, script, args, relpath)
        message = (f"the run needed {relpath}, which was not sent to {host} ({reason}); "
                   f"send it with: {shlex.join(['offload', *command])}")
        return Missing(relpath, reason, command, message)
    return None


def diagnose_failure(record, host_project_dir: str, root: Path, selection, options):
    """After a failed run: the file its output says is missing, when the laptop has it and did not send it; said."""
    try:
        output = (record.dir / "output.log").read_text(errors="replace")
    except OSError:
        return None
    command_line = options.command_line
    if command_line is None:  # run() called directly, not from the command line: the plainest equivalent
        command_line = ["run", *(["--host", options.host] if options.host else []), options.script, *options.args]
    missing = find_missing(output, host_project_dir, root, selection, record.meta.get("host", "the host"),
                           command_line, options.script, options.args)
    if missing is not None:
        say(missing.message)
    else:
        diagnose_missing_module(output, record.meta.get("host", "the host"), root,
                                {entry.path for entry in selection.entries})
    return missing
