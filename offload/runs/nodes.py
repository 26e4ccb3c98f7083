"""The nodes of a job: a registered host each (RemoteNode), or this machine for the CPU fallback (LocalNode).

Everything in which a run on this machine differs from one on a host is said here, by the node: where the
project is (synced, or the project itself), where the run's directory is, whether the host lock is taken,
how many processes by default, whether setup runs, what Ctrl-C does, and what the summary adds.
"""
from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path

from remote_agent.protocol import HOST_LOCK, beside

from offload.console import say
from offload.config import project as project_config
from offload.errors import RemoteError
from offload.runs.estimates import gpu_estimates
from offload.runs.interrupt import StopOnInterrupt
from offload.runs.logout_survival import detach_warning
from offload.runs.setup import run_setup, setup_text
from offload.sync.fetch_paths import destination
from offload.sync.push import put_back, sync_project


class Node:
    """One node of a job: its rank, target and link, and once synced its project dir, run dir and tree."""

    fallback = False

    def __init__(self, rank: int, target, link):
        self.rank, self.target, self.link = rank, target, link
        self.project_dir = self.run_dir = ""
        self.tree = None  # {"stage": ID or None}: the synced tree the host keeps for this run (remote_agent/tree.py)

    @property
    def label(self) -> str:
        return f"node{self.rank} {self.target.name}"

    @property
    def where(self) -> str:
        return self.target.name

    def check_torch(self) -> None:
        hello = self.link.agent.hello
        if not hello.get("has_torch"):
            raise RemoteError(f"python {hello['python']} on {self.where} has no torch",
                              hint="install torch there, or set python for this host in hosts.yaml to one that has it")

    def stop(self, grace: float) -> dict:
        """Stop the node's job through a second agent (the first may be busy following)."""
        agent = self.link.second_agent()
        try:
            return agent.request("stop", run_dir=self.run_dir, grace=grace, timeout=grace + 60)
        finally:
            agent.close()


class RemoteNode(Node):
    lock = HOST_LOCK  # one job per host account, whatever the workdir

    def prepare(self, root: Path, selection, force: bool) -> None:
        synced = sync_project(self.link.agent, root, self.target.workdir, selection=selection, for_run=True, force=force)
        self.project_dir, self.tree = synced.project_dir, {"stage": synced.stage}

    def put_back(self, files: Path, entries: list, root: Path) -> None:
        put_back(self.link.agent, files, entries, self.project_dir)

    def setup(self, root: Path, reconnect_for: float, terminal=None) -> None:
        run_setup(self.link, self.target, root, self.project_dir, reconnect_for, terminal=terminal, tree=self.tree)

    def run_dir_for(self, run_id: str) -> str:
        return f"{self.project_dir}/.offload/runs/{run_id}"

    def default_nproc(self) -> int:
        return self.target.gpus

    def detach_warning(self, facts: dict) -> str | None:
        return detach_warning(facts, self.target.name)  # logind there may end the run as this session closes

    def watching(self, run_id: str, pgid: int | None):
        return nullcontext()  # Ctrl-C reaches the job's caller, who asks whether to stop the run or detach

    def estimates(self, figures: dict, args: list, script: str, root: Path) -> list:
        return []


class LocalNode(Node):
    """This machine, through the local agent: the project is run where it is, with nothing synced."""

    fallback = True
    lock = None  # no host lock on the laptop

    @property
    def where(self) -> str:
        return "this machine"

    def prepare(self, root: Path, selection, force: bool) -> None:
        self.project_dir = str(root)

    def put_back(self, files: Path, entries: list, root: Path) -> None:
        """A resumed run's fetched files go back into the project itself, never through a symlink leading out."""
        for entry in entries:
            final = destination(root, entry.path)
            final.parent.mkdir(parents=True, exist_ok=True)
            part = Path(beside(str(final)))
            shutil.copy2(files / entry.path, part)
            part.replace(final)

    def setup(self, root: Path, reconnect_for: float, terminal=None) -> None:
        if setup_text(project_config.load(root).setup, None) is not None:
            say("setup runs only on hosts: skipped for this local run")

    def run_dir_for(self, run_id: str) -> str:
        return f"{self.project_dir}/.offload/runs/{run_id}/job"  # the record's own dir is .offload/runs/<id>

    def default_nproc(self) -> int:
        return 1

    def detach_warning(self, facts: dict) -> str | None:
        return None

    def watching(self, run_id: str, pgid: int | None):
        return StopOnInterrupt(run_id, pgid)  # Ctrl-C stops a local run: nothing else would

    def estimates(self, figures: dict, args: list, script: str, root: Path) -> list:
        return gpu_estimates(figures, args, script, root)
