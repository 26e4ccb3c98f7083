"""Setup before a job: a shell command run on the host in the synced project, only when its inputs changed.

The command is offload.yaml's `setup`, then the host's `setup` from hosts.yaml, joined by a newline into one
script run by `sh -ec` (the first failing command fails it, as in a CI step). Its key is a sha256 over the
script, the host's Python (another interpreter needs its own setup) and, for each input file (offload.yaml's
`setup_inputs` globs, default DEFAULT_INPUTS), its path and content, computed on the laptop from the local
project. The host keeps the last key that succeeded in <project_dir>/.offload/setup.json; the same key
again means skip. The setup runs as a job under the supervisor (so a dropped link never kills it), holding
the host lock like a run, and is followed like a run.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from remote_agent.protocol import HOST_LOCK

from offload.config import project as project_config
from offload.console import say
from offload.errors import OffloadError
from offload.runs.follow import exit_code_of, follow_run
from offload.runs.record import new_run_id
from offload.runs.start import describe_holder, start_request
from offload.sync.ignore import ALWAYS_EXCLUDED_DIRS

DEFAULT_INPUTS = ("requirements*.txt", "pyproject.toml", "environment.yml")  # at the project root, where they exist
SHELL = ("sh", "-ec")  # -e: a failing `pip install` in the project's part is not hidden by the host's part
SETUP_DIR = ".offload/setup"  # in the host's project dir: one job directory per setup that ran
KEY_VERSION = b"offload-setup/1"


class SetupFailed(OffloadError):
    """The setup exited non-zero (or was killed): the job does not start, and offload exits with its code."""

    def __init__(self, host: str, exit_code: int, how: str, run_dir: str):
        super().__init__(f"setup on {host} {how} (see its output above)",
                         hint=f"fix it and run again; its log on {host} is {run_dir}/output.log")
        self.host, self.exit_code, self.run_dir = host, exit_code, run_dir


@dataclass(frozen=True)
class SetupPlan:
    text: str     # the script, as `sh -ec` runs it
    python: str   # the host's interpreter (its path, from the agent's hello)
    inputs: dict  # relative path -> sha256 of the file's content, sorted by path

    @property
    def key(self) -> str:
        return setup_key(self.text, self.python, self.inputs)


def setup_text(project_setup: str | None, host_setup: str | None) -> str | None:
    """The project's setup, then the host's, as one script; None when neither is set."""
    parts = [text.strip("\n") for text in (project_setup, host_setup) if text and text.strip()]
    return "\n".join(parts) or None


def input_files(root: Path, patterns) -> list:
    """The files (relative posix paths, sorted) that the glob patterns find in the project; never in .git,
    .offload, .venv and the like, which are not synced."""
    found = set()
    for pattern in patterns:
        for path in root.glob(pattern):
            relative = path.relative_to(root)
            if path.is_file() and not ALWAYS_EXCLUDED_DIRS.intersection(relative.parts[:-1]):
                found.add(relative.as_posix())
    return sorted(found)


def plan_setup(text: str, root: Path, patterns, python: str) -> SetupPlan:
    inputs = {}
    for relative in input_files(root, patterns):
        try:
            inputs[relative] = hashlib.sha256((root / relative).read_bytes()).hexdigest()
        except OSError as exc:
            raise OffloadError(f"cannot read setup input {relative}: {exc.strerror}") from None
    return SetupPlan(text, python, inputs)


def setup_key(text: str, python: str, inputs: dict) -> str:
    """sha256 over the script, the interpreter and each input's path and content digest, each part
    length-prefixed so that no two different setups can run together into the same bytes."""
    digest = hashlib.sha256(KEY_VERSION)
    parts = [text, python] + [item for path in sorted(inputs) for item in (path, inputs[path])]
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def why_run(previous: dict, plan: SetupPlan) -> str | None:
    """Why the setup must run, given the host's record of the last one that succeeded; None: skip it."""
    if previous.get("key") == plan.key:
        return None
    if not previous.get("key"):
        return "it has not succeeded in this project directory yet"
    reasons = []
    if previous.get("text_sha256") != text_digest(plan.text):
        reasons.append("the setup command changed")
    if previous.get("python") != plan.python:
        reasons.append(f"the python changed to {plan.python}")
    before = previous.get("inputs") or {}
    changed = sorted(path for path in set(before) | set(plan.inputs) if before.get(path) != plan.inputs.get(path))
    if changed:
        listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        reasons.append(f"changed: {listed}")
    return "; ".join(reasons) or "its key changed"


def state_of(plan: SetupPlan) -> dict:
    """What the host keeps once the setup succeeded: the key, and enough to say next time what changed."""
    return {"key": plan.key, "text_sha256": text_digest(plan.text), "python": plan.python,
            "inputs": plan.inputs, "succeeded_unix": round(time.time(), 3)}


def run_setup(link, target, project_root: Path, project_dir: str, reconnect_for: float, *, terminal=None,
              tree: dict | None = None) -> None:
    """Run the setup for one host before its job, unless the host's record says its key is unchanged.

    link: the transport.link.Link to `target` (its agent is used, and reopened if the link drops while following);
    target: the resolved SSHTarget (a local run has no setup: runs/nodes.py);
    project_root: the local project; project_dir: its synced copy on the host (sync_project's project_dir);
    reconnect_for: seconds to keep reconnecting while following, as for runs; terminal: where the setup's
    output goes (a binary stream; default stdout); tree: the run's synced tree on the host ({"stage": ID or
    None}, see remote_agent/tree.py), which the setup runs in, as the run will. Returns once the setup succeeded or was skipped; raises
    SetupFailed (its exit_code is the setup's) when it failed, and OffloadError for a bad offload.yaml.
    """
    config = project_config.load(project_root)
    text = setup_text(config.setup, target.setup)
    if text is None:
        return
    patterns = DEFAULT_INPUTS if config.setup_inputs is None else config.setup_inputs
    plan = plan_setup(text, project_root, patterns, link.agent.hello["python"])
    previous = link.agent.request("setup_state", project_dir=project_dir)["state"]
    reason = why_run(previous, plan)
    if reason is None:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(previous.get("succeeded_unix") or 0))
        inputs = ", ".join(plan.inputs) or "none"
        say(f"setup on {target.name} skipped: unchanged since it succeeded at {since} (inputs: {inputs})")
        return
    say(f"setup on {target.name} runs: {reason}")
    started = time.monotonic()
    run_dir = f"{project_dir}/{SETUP_DIR}/{new_run_id()}-{plan.key[:12]}"
    finished = follow_setup(link, target, plan, project_dir, run_dir, reconnect_for, terminal, tree)
    code = exit_code_of(finished)
    if code == 0 and finished.get("exit_code") != 0:  # ended without an exit code: the lock failed, or it was lost
        code = 1
    if code:
        raise SetupFailed(target.name, code, describe_failure(finished, code), run_dir)
    link.agent.request("setup_state", project_dir=project_dir, state=state_of(plan))
    say(f"setup on {target.name} succeeded in {time.monotonic() - started:.1f} s")


def follow_setup(link, target, plan: SetupPlan, project_dir: str, run_dir: str, reconnect_for: float,
                 terminal, tree: dict | None = None) -> dict:
    """Start the setup as a job holding the host lock, and stream its output to the end (the exit message)."""
    env = {**target.env, "PYTHONUNBUFFERED": "1", "OFFLOAD_PYTHON": plan.python}
    started = start_request(link.agent, run_dir=run_dir, cwd=project_dir, argv=[*SHELL, plan.text], env=env,
                            lock=HOST_LOCK, wait=True, run_id=f"setup-{plan.key[:12]}",
                            tree=tree, keep_tree=True)  # the run that follows takes the tree over
    if started["state"] == "waiting":
        say(f"{target.name} is busy: {describe_holder(started.get('holder'))}; setup waits for it")
    sink = SetupOutput(terminal)
    try:
        return follow_run(link, run_dir, sink, reconnect_for)
    except KeyboardInterrupt:
        error = OffloadError(f"detached: setup goes on on {target.name}; the job was not started",
                             hint=f"run again once it is done (its log on {target.name}: {run_dir}/output.log)")
        error.exit_code = 130
        raise error from None


def describe_failure(finished: dict, code: int) -> str:
    if finished.get("state") == "lost":
        return "was lost: its supervisor died without recording an exit"
    if finished.get("signal"):
        return f"was killed by {finished['signal']}"
    if finished.get("error"):
        return f"could not run: {finished['error']}"
    return f"failed with exit code {code}"


class SetupOutput:
    """Where a followed setup's bytes go: the terminal, as a run's output; the host keeps the log."""

    def __init__(self, terminal=None):
        self.terminal = terminal or sys.stdout.buffer
        self.log_bytes = 0      # how much of the host's output.log we have: where following resumes
        self.metrics_bytes = 0  # a setup writes no metrics; any it does are dropped

    def write(self, data: bytes) -> None:
        self.terminal.write(data)
        self.terminal.flush()
        self.log_bytes += len(data)

    def metrics(self, data: bytes) -> None:
        self.metrics_bytes += len(data)
