"""The host side of a sync: report what is there, write what arrives, delete what the laptop says.

Files are written under a temporary name in their final directory and renamed when complete, so a
file under its final name is always whole. `.offload/synced.json` in the project records which paths
syncs put there: only those are ever deleted, so what runs wrote survives.
"""
from __future__ import annotations

import json
import os
import shutil
import stat

from . import protocol

STATE_FILE = os.path.join(".offload", "synced.json")
PART_SUFFIX = ".offload-part"


class RequestError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def prepare(workdir: str, project: str) -> dict:
    """Create the project directory and prove it is writable before anything is sent."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    project_dir = os.path.join(workdir, project)
    os.makedirs(os.path.join(project_dir, ".offload"), exist_ok=True)
    probe = os.path.join(project_dir, ".offload", "write-probe")
    with open(probe, "wb") as f:
        f.write(b"ok")
    os.unlink(probe)
    return {"project_dir": project_dir, "free_bytes": shutil.disk_usage(project_dir).free}


def safe_path(project_dir: str, relpath: str) -> str:
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".offload":
        raise RequestError("bad_request", f"refusing path outside the project: {relpath!r}")
    return os.path.join(project_dir, *parts)


def describe(path: str) -> list | None:
    """[kind, size, mtime_ns, mode, target] of what is at path, or None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ["link", 0, st.st_mtime_ns, mode, os.readlink(path)]
    if stat.S_ISDIR(st.st_mode):
        return ["dir", 0, st.st_mtime_ns, mode, ""]
    return ["file", st.st_size, st.st_mtime_ns, mode, ""]


def load_state(project_dir: str) -> set:
    try:
        with open(os.path.join(project_dir, STATE_FILE)) as f:
            return set(json.load(f)["synced"])
    except (FileNotFoundError, ValueError, KeyError):
        return set()


def save_state(project_dir: str, synced: set) -> None:
    path = os.path.join(project_dir, STATE_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"synced": sorted(synced)}, f)
    os.replace(path + ".tmp", path)


class Receiver:
    def __init__(self):
        self.expected = {}  # project_dir -> every path the laptop's last manifest request named

    def manifest(self, project_dir: str, paths: list) -> dict:
        synced = load_state(project_dir)
        self.expected[project_dir] = set(paths)
        present = {}
        for relpath in set(paths) | synced:
            found = describe(safe_path(project_dir, relpath))
            if found is not None:
                present[relpath] = found
        return {"present": present, "synced": sorted(synced)}

    def apply(self, request: dict, inp) -> dict:
        """Delete, then receive `put` messages until `end`. The state is saved even if the link drops."""
        project_dir = request["project_dir"]
        synced = load_state(project_dir)
        synced.difference_update(request.get("forget", []))
        deleted = written = received = 0
        failure = None  # after a failure, keep reading so the stream stays in step; report it at the end
        try:
            for relpath in sorted(request.get("delete", []), reverse=True):  # children before parents
                try:
                    deleted += remove(safe_path(project_dir, relpath))
                except (OSError, RequestError) as exc:
                    failure = failure or exc
                synced.discard(relpath)
            while True:
                message = protocol.read_message(inp)
                if message is None:
                    raise protocol.ProtocolError("the laptop went away in the middle of a sync")
                if message["t"] == "end":
                    break
                if message["t"] == "drop":  # the laptop saw the file change while sending it
                    remove(safe_path(project_dir, message["path"]))
                    synced.discard(message["path"])
                    written -= 1
                    continue
                if message["t"] != "put":
                    raise RequestError("bad_request", f"unexpected {message['t']!r} during a sync")
                if failure is not None:
                    drain(inp, int(message.get("size", 0)))
                    continue
                try:
                    received += put(project_dir, message, inp)
                except (OSError, RequestError) as exc:
                    failure = exc
                    continue
                synced.add(message["path"])
                written += 1
            if failure is not None:
                raise failure
            synced |= self.expected.get(project_dir, set())
        finally:
            save_state(project_dir, synced)
        return {"written": written, "deleted": deleted, "bytes": received}


def remove(path: str) -> int:
    found = describe(path)
    if found is None:
        return 0
    if found[0] == "dir":
        try:
            os.rmdir(path)  # only empty ones: a directory a run filled is the run's
        except OSError:
            return 0
    else:
        os.unlink(path)
    return 1


def put(project_dir: str, message: dict, inp) -> int:
    """Write one entry. The file's bytes are always consumed from the stream, even when writing fails."""
    size = int(message.get("size", 0)) if message["kind"] == "file" else 0
    pieces = protocol.read_exactly(inp, size)
    try:
        write_entry(safe_path(project_dir, message["path"]), message, pieces)
    finally:
        for _ in pieces:  # a no-op when the write consumed them all
            pass
    return size


def write_entry(path: str, message: dict, pieces) -> None:
    kind, mode, mtime_ns = message["kind"], int(message["mode"]) & 0o7777, int(message["mtime_ns"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    existing = describe(path)
    if kind == "dir":
        if existing is not None and existing[0] != "dir":
            os.unlink(path)
        os.makedirs(path, exist_ok=True)
        return
    if existing is not None and existing[0] == "dir":
        raise RequestError("bad_request", f"{message['path']} is a directory on the host; remove it there first")
    part = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + PART_SUFFIX)
    try:
        if kind == "link":
            if describe(part) is not None:
                os.unlink(part)
            os.symlink(message["target"], part)
        else:
            with open(part, "wb") as f:
                for piece in pieces:
                    f.write(piece)
            os.chmod(part, mode)
        os.utime(part, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        os.replace(part, path)
    except BaseException:
        if describe(part) is not None:
            os.unlink(part)
        raise


def drain(inp, size: int) -> None:
    for _ in protocol.read_exactly(inp, size):
        pass
