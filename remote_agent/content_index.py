"""The host's content index: which files offload wrote here, across every project dir of the workdir, hold
which blocks; so a new or renamed path whose content the host already has is built from that copy (based.py).

The index is the block-digest sidecars themselves (sidecars.py), read when a sync asks: no second copy of the
user's data and nothing to keep in step. A project dir removed takes its sidecars, so its entries, with it; an
entry whose file no longer has the size, mtime and inode its sidecar recorded is skipped. A file changed behind
offload's back with those restored is caught by the SHA-256 the laptop sends with a patch built on it, and its
sidecar is dropped then.
"""
from __future__ import annotations

import os

from . import sidecars
from .fence import Fence, OutsideProject
from .protocol import DIGEST_BYTES
from .sidecars import BLOCKS_DIR, path_key


def plain_name(name) -> bool:
    """A project dir's name as offload makes them: one component, not hidden."""
    return isinstance(name, str) and bool(name) and "/" not in name and not name.startswith(".")


def plain_relpath(relpath) -> bool:
    """A path inside a project as a sync names it (files.checked_relpath's rule)."""
    parts = relpath.split("/") if isinstance(relpath, str) else [""]
    return bool(relpath) and parts[0] not in ("", ".offload") and not {"", ".", ".."} & set(parts)


def base_file(workdir: str, name: str, relpath: str) -> tuple:
    """(project dir, path) of relpath in project dir `name` of the workdir, resolved inside that project;
    OutsideProject for a name or path no sync could have written."""
    project_dir = os.path.join(workdir, name) if plain_name(name) else ""
    if not project_dir or not plain_relpath(relpath) or os.path.islink(project_dir):  # a link leads out of the workdir
        raise OutsideProject(str(relpath), str(name), workdir, f"{name}/{relpath} is no file a sync wrote")
    return project_dir, Fence(project_dir).path(relpath)


def entries(workdir: str):
    """Yield (project dir name, relpath, size, digests) for every sidecar that still describes its file."""
    try:
        names = sorted(os.listdir(workdir))
    except OSError:
        return
    for name in names:
        blocks_dir = os.path.join(workdir, name, BLOCKS_DIR)
        try:
            keys = os.listdir(blocks_dir)
        except OSError:
            continue
        for key in keys:
            found = sidecars.load(os.path.join(blocks_dir, key))
            if found is None:
                continue
            header, digests = found
            relpath = header.get("path")
            try:
                if path_key(relpath) != key:
                    continue
                st = os.lstat(base_file(workdir, name, relpath)[1])
            except (OSError, OutsideProject, AttributeError, TypeError):
                continue
            if sidecars.describes(header, digests, relpath, st):
                yield name, relpath, st.st_size, digests


def summary(workdir: str) -> dict:
    """What `offload hosts check` says of the index: files, their bytes, and how many project dirs hold them."""
    files, size, projects = 0, 0, set()
    for name, _, file_size, _ in entries(workdir):
        files, size = files + 1, size + file_size
        projects.add(name)
    return {"files": files, "bytes": size, "projects": len(projects)}


def find_bases(workdir: str, wanted: list) -> tuple:
    """For each [path, samples] of wanted (samples: [[block index, digest hex], ...] of the laptop's file), the
    indexed file that has the most of those blocks at those offsets, if it has more than half of them.
    Returns ([[path, project dir name, relpath, block count], ...], those files' digests, concatenated)."""
    wanted = [(path, [(int(index), bytes.fromhex(digest)) for index, digest in samples]) for path, samples in wanted]
    best = {}  # path -> (score, name, relpath, digests)
    for name, relpath, _, digests in entries(workdir):
        for path, samples in wanted:
            score = sum(1 for index, digest in samples
                        if digests[index * DIGEST_BYTES:(index + 1) * DIGEST_BYTES] == digest)
            if 2 * score > len(samples) and score > best.get(path, (0,))[0]:
                best[path] = (score, name, relpath, digests)
    found = [[path, best[path][1], best[path][2], len(best[path][3]) // DIGEST_BYTES]
             for path, _ in wanted if path in best]
    return found, b"".join(best[path][3] for path, _ in wanted if path in best)
