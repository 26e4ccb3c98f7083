"""Directories the laptop names on the host: a project's, a run's, a job's working directory.

The laptop names each by an absolute path (or one under ~). A relative one, or "", would be taken from the
agent's own working directory, the home, so a request would read or write there: refused instead. The one
exception is a sync's `prepare`, which names the project by the workdir and one directory name in it.
"""
from __future__ import annotations

import os
import shutil

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


def project_dir_of(workdir: str, project: str) -> str:
    return os.path.join(os.path.abspath(os.path.expanduser(workdir)), project)


def prepare(workdir: str, project: str) -> dict:
    """Create the project directory and prove it is writable before anything is sent."""
    project_dir = project_dir_of(workdir, checked_project_name(project))
    os.makedirs(os.path.join(project_dir, ".offload"), exist_ok=True)
    probe = os.path.join(project_dir, ".offload", f"write-probe.{os.getpid()}")  # two agents may probe at once
    with open(probe, "wb") as f:
        f.write(b"ok")
    os.unlink(probe)
    return {"project_dir": project_dir, "free_bytes": shutil.disk_usage(project_dir).free}


def checked_project_name(project: str) -> str:
    """A project is one directory in the workdir: a name that climbs out of it or names a deeper or an absolute
    path would have the sync write there."""
    if not isinstance(project, str) or project in ("", ".", "..") or "/" in project or "\0" in project:
        raise RequestError("bad_request", f"a project is one directory name in the workdir, not {project!r}")
    return project
