"""What a fetch will do, decided before a byte moves: the host's listing of a run's files (RemoteFile, with
each file's SHA-256) and, against what is here already (LocalState), which to skip and where to resume the rest."""
from __future__ import annotations

from dataclasses import dataclass, field

from remote_agent.protocol import Withheld

from offload.errors import OffloadError, RemoteError

SILENCE_LIMIT_S = 60  # the host ticks every 2 s while it hashes; a link silent this long is dead


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the run's project directory, "/"-separated
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class LocalState:
    final_sha256: str | None = None  # of the file under the final name, hashed only when its size matches
    part_size: int | None = None     # of `.NAME.offload-part`, left by an interrupted fetch


@dataclass
class FetchPlan:
    fetch: list = field(default_factory=list)  # (RemoteFile, offset to resume from)
    skip: list = field(default_factory=list)   # RemoteFile already here with the same SHA-256

    @property
    def bytes_to_fetch(self) -> int:
        return sum(remote.size - offset for remote, offset in self.fetch)


def plan_fetch(remote_files: list, local: dict) -> FetchPlan:
    """Pure: what to skip (same hash here) and where to resume each of the rest (a part longer than the
    file cannot be a prefix of it, so it starts over)."""
    plan = FetchPlan()
    for remote in remote_files:
        state = local.get(remote.path, LocalState())
        if state.final_sha256 == remote.sha256:
            plan.skip.append(remote)
        else:
            part = state.part_size or 0
            plan.fetch.append((remote, part if part <= remote.size else 0))
    return plan


def list_remote(agent, project_dir: str, patterns: list, run_dir: str | None = None, current: bool = False) -> dict:
    """The host's `file_list` reply: project_dir (real), files (RemoteFile), unmatched patterns; given a run_dir,
    also withheld (Withheld) and own_versions (whether the run recorded what it wrote; None: not asked)."""
    agent.send("list_files", project_dir=project_dir, patterns=patterns, run_dir=run_dir, current=current)
    while True:
        try:
            message = agent.recv(timeout=SILENCE_LIMIT_S)
        except RemoteError as exc:
            raise refusal(exc, agent.label) from None
        if message["t"] == "file_list":
            files = [RemoteFile(path, int(size), int(mtime_ns), sha) for path, size, mtime_ns, sha in message["files"]]
            return {"project_dir": message["project_dir"], "files": files, "unmatched": message.get("unmatched", []),
                    "withheld": [Withheld(*item) for item in message.get("withheld", [])],
                    "own_versions": message.get("own_versions") if run_dir and not current else None}
        if message["t"] != "tick":
            raise OffloadError(f"unexpected message from {agent.label} while listing files: {message['t']}")


def refusal(exc: RemoteError, label: str) -> OffloadError:
    if exc.code != "refused":
        return exc
    return OffloadError(f"{getattr(exc, 'detail', exc.message)} (checked on {label})",
                        hint="fetch only files inside the run's project directory; copy others there on the host first")
