"""Directories the laptop names on the host: a project's, a run's, a job's working directory.

The laptop names each by an absolute path (or one under ~). A relative one, or "", would be taken from the
agent's own working directory, the home, so a request would read or write there: refused instead.
"""
from __future__ import annotations

import os

from .protocol import RequestError


def absolute(path: str, what: str) -> str:
    """path, ~ expanded, when it is absolute; else a bad_request naming `what` it was meant to be."""
    if not isinstance(path, str) or "\0" in path:
        raise RequestError("bad_request", f"{what} must be a path on the host, not {path!r}")
    expanded = os.path.expanduser(path)
    if not os.path.isabs(expanded):
        raise RequestError("bad_request", f"{what} must be an absolute path on the host, not {path!r}")
    return os.path.abspath(expanded)


def project_dir(path: str) -> str:
    """The absolute path of a project directory that is there: one a sync prepared."""
    found = absolute(path, "a project directory")
    if not os.path.isdir(found):
        raise RequestError("bad_request", f"no project directory {found} on the host: sync it first")
    return found
