"""`offload sync`: the project to its host, nothing run."""
from __future__ import annotations

from pathlib import Path

from offload.config.resolve import registered_target
from offload.console import human_size, say
from offload.runs.record import project_root_of
from offload.sync.push import sync_project
from offload.transport.links import open_link


def sync_only(host_name: str | None, project: Path | None, connect_timeout: float, include: list | tuple = (),
              force: bool = False) -> int:
    root = project_root_of(project)
    target = registered_target(host_name, "sync to")
    name = target.name
    with open_link(target, connect_timeout) as link:  # a kept link may have been opened for another workdir
        result = sync_project(link.agent, root, target.workdir, include=include, force=force)
    if result.sent_files or result.deleted:
        compressed = f", {human_size(result.wire_bytes)} sent with {result.compressed_with}" if result.compressed_with else ""
        say(f"synced {result.sent_files} changed of {result.sent_files + result.unchanged} entries "
            f"({human_size(result.sent_bytes)}{compressed}), deleted {result.deleted} -> {name}:{result.project_dir}")
    return 0
