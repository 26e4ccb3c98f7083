"""The laptop's record of runs: .offload/runs/<run-id>/ with output.log and meta.json; the project they belong to
(found as git finds a repository), and the run a reference names (RUN: a run id, a unique prefix of one, a unique
suffix of 4+ characters, `last`, the project's latest run, or `running`, the one run not recorded as ended)."""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from offload.errors import OffloadError

RECORDS_DIR = Path(".offload")
RUNS_DIR = RECORDS_DIR / "runs"
PROJECT_MARKERS = ("offload.yaml", str(RUNS_DIR), ".git")  # any of them, in the nearest directory, makes the root


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def claim_run_id(project_root: Path) -> str:
    """A new run id whose record directory this process made: two runs started in the same second that drew the
    same suffix (1 in 65,536) never share a record; the later one draws again."""
    make_records_dir(project_root)
    while True:
        run_id = new_run_id()
        try:
            (project_root / RUNS_DIR / run_id).mkdir(parents=True)
        except FileExistsError:
            continue
        return run_id


def timestamp(unix: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(unix))


class RunRecord:
    def __init__(self, project_root: Path, run_id: str):
        self.run_id = run_id
        self.dir = project_root / RUNS_DIR / run_id
        self.meta = {}

    @property
    def log_path(self) -> Path:
        return self.dir / "output.log"

    def create(self, **meta) -> None:
        make_records_dir(self.dir.parents[2])  # <root>/.offload/runs/<id>
        self.dir.mkdir(parents=True, exist_ok=True)  # claimed already (claim_run_id) where the id is new
        self.meta = {"run_id": self.run_id, "started_at": timestamp(), "started_unix": round(time.time(), 3),
                     "ended_at": None, "exit_code": None, **meta}
        self.save()

    def end(self, host_status: dict | None = None, **changes) -> None:
        """Record that the run ended (when, and how: exit code, signal, state, ...). When is the host's end time,
        from its status.json, when it has one (a run whose supervisor died has none: then now); the duration
        is then the host's too, on its own clock from when its supervisor started, whatever the laptop's says."""
        ended, queued = (host_status or {}).get("ended_at"), (host_status or {}).get("queued_at")
        if ended and queued:
            changes["duration_s"] = round(ended - queued, 1)
        ended = ended or round(time.time(), 3)
        self.update(ended_at=timestamp(ended), ended_unix=ended, **changes)

    def update(self, **changes) -> None:
        self.meta.update(changes)
        self.save()

    def save(self) -> None:
        path = self.dir / "meta.json"
        tmp = path.with_name("meta.json.tmp")
        tmp.write_text(json.dumps(self.meta, indent=2) + "\n")
        os.replace(tmp, path)


def load_runs(project_root: Path) -> list:
    """Every run recorded in this project, oldest first by start time (run ids of the same second are not
    in order); meta.json that cannot be read is skipped."""
    found = []
    for meta_path in sorted((project_root / RUNS_DIR).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and "run_id" in meta:
            found.append(meta)
    return sorted(found, key=lambda meta: (meta.get("started_unix") or 0, meta["run_id"]))


def duration_s(meta: dict) -> float | None:
    if meta.get("duration_s") is not None:  # the host's, on its own clock (RunRecord.end)
        return meta["duration_s"]
    started, ended = meta.get("started_unix"), meta.get("ended_unix")
    return round(ended - started, 1) if started and ended else None


def project_root_of(options_project: Path | None) -> Path:
    """--project DIR as given; otherwise the nearest directory, from the current one up, holding offload.yaml,
    .offload/runs/ or .git (as git finds a repository); with none of them, the current directory."""
    if options_project is not None:
        root = Path(options_project).resolve()
        if not root.is_dir():
            raise OffloadError(f"project directory {root} does not exist")
        return root
    here = Path.cwd().resolve()
    return next((directory for directory in (here, *here.parents) if holds_marker(directory)), here)


def holds_marker(directory: Path) -> bool:
    """.offload/ counts with run records in it: a host keeps its own .offload/ (~/.offload/gpu.lock, a synced
    project's sync.lock) in directories that are no laptop's project."""
    return any((directory / marker).exists() for marker in PROJECT_MARKERS)


def make_records_dir(project_root: Path) -> None:
    """.offload/, made with a .gitignore of `*` in it so that run records never show in `git status`."""
    records = project_root / RECORDS_DIR
    try:
        records.mkdir()
    except FileExistsError:
        return
    (records / ".gitignore").write_text("# made by offload: its run records stay out of git\n*\n")


LAST = "last"
RUNNING = "running"
SUFFIX_FROM = 4  # characters: a run id ends in 4 random hex digits, the part that tells same-second runs apart


def find_run(project_root: Path, reference: str) -> dict:
    """The meta.json of the run `reference` names, or a one-line error saying what to type instead."""
    recorded = load_runs(project_root)
    if not recorded:
        raise OffloadError(f"no runs recorded in {project_root}", hint="start one with `offload run SCRIPT`")
    if reference == LAST:
        return recorded[-1]
    if reference == RUNNING:
        return the_running_run(recorded)
    exact = [meta for meta in recorded if meta["run_id"] == reference]
    matches = exact or [meta for meta in recorded if meta["run_id"].startswith(reference)
                        or (len(reference) >= SUFFIX_FROM and meta["run_id"].endswith(reference))]
    if not matches:
        raise OffloadError(f"no run {reference!r} in {project_root}",
                           hint="`offload runs` lists them; a reference is an id, its start, its last 4+ characters, "
                                "`last` or `running`")
    if len(matches) > 1:
        raise OffloadError(f"{reference!r} names {len(matches)} runs ({listed(matches)})", hint="type more of the run id")
    return matches[0]


def the_running_run(recorded: list) -> dict:
    """The one run whose end is not recorded; none or several is an error that names them."""
    running = [meta for meta in recorded if not ended(meta)]
    if len(running) == 1:
        return running[0]
    if not running:
        raise OffloadError(f"no run is running (the last one, {recorded[-1]['run_id']}, has ended)",
                           hint="use `last`, or an id from `offload runs`")
    raise OffloadError(f"{len(running)} runs are running ({listed(running)})", hint="name one by its id or its last 4 characters")


def ended(meta: dict) -> bool:
    return meta.get("ended_at") is not None or meta.get("exit_code") is not None or bool(meta.get("signal"))


def listed(metas: list) -> str:
    return ", ".join(meta["run_id"] for meta in metas[:4]) + (", ..." if len(metas) > 4 else "")


def node_meta(meta: dict, node: int) -> dict:
    """The run as seen from one of its nodes (a multi-node run's node N: its host and directories);
    a single-host run is its own node 0."""
    nodes = meta.get("nodes") or []
    if not nodes:
        if node:
            raise OffloadError(f"run {meta['run_id']} ran on one host: there is no node {node}")
        return meta
    if node >= len(nodes):
        raise OffloadError(f"run {meta['run_id']} has nodes 0 to {len(nodes) - 1}, not {node}")
    return {**meta, **{key: nodes[node][key] for key in ("host", "address", "project_dir", "run_dir")}}


def node_metas(meta: dict) -> list:
    """One meta per node of the run (one for a single-host run)."""
    return [node_meta(meta, node) for node in range(max(1, len(meta.get("nodes") or [])))]


def record_of(project_root: Path, meta: dict) -> RunRecord:
    record = RunRecord(project_root, meta["run_id"])
    record.meta = dict(meta)
    return record


def script_in_project(root: Path, script: str) -> str:
    """SCRIPT as a path from the project root. A relative one is taken from the current directory (as python
    takes it) when that is inside the project, so `offload run train.py` in a subdirectory runs that
    subdirectory's train.py; from outside (with --project DIR), from the project root."""
    here = Path.cwd().resolve()
    base = here if here == root or root in here.parents else root
    absolute = (base / script).resolve()  # an absolute SCRIPT stays as it is
    try:
        relative = absolute.relative_to(root).as_posix()
    except ValueError:
        raise OffloadError(f"script {script} is outside the project {root}",
                           hint="run offload from inside the project, or pass --project DIR") from None
    if not absolute.is_file():
        raise OffloadError(f"script {script} not found in {root}", hint="run offload from your project's directory, or pass --project DIR")
    return relative
