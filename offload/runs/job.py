"""`offload run` and `offload sync`: pick the target, sync, launch through the agent, follow the output.

A host that cannot be reached falls back to a local run through the very same agent code; a host that
answers but refuses us (authentication, host key) is an error, never a fallback.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from remote_agent.hostlock import HOST_LOCK

from offload.transport import agent as agents
from offload.config import hoststate, hosts
from offload.runs import launch, record as runs, sinks as stream
from offload.transport import ssh
from offload.console import human_size
from offload.errors import HostUnreachable, OffloadError, RemoteError
from offload.runs.logout_survival import detach_warning
from offload.runs.record import project_root_of
from offload.config.resolve import resolve
from offload.runs.setup import run_setup
from offload.transport.link import Link, follow_run

LOCAL = "local"
BUSY_EXIT = 75  # EX_TEMPFAIL: the host is busy, try again later


@dataclass
class RunOptions:
    script: str | None = None     # None only with resume: RUN's own command
    args: list = field(default_factory=list)
    host: str | None = None
    hosts: list = field(default_factory=list)  # several: one job across them all (multinode.py)
    nproc_per_node: int | None = None
    no_fallback: bool = False
    connect_timeout: float = 10.0
    project: Path | None = None
    detach: bool = False            # return once the job has started
    reconnect_for: float = 600.0    # seconds to keep reconnecting after the link drops while following
    fetch: list = field(default_factory=list)  # patterns to fetch when the run ends
    no_wait: bool = False           # exit 75 instead of waiting for a busy host
    resume: str | None = None       # a run whose command runs again, its fetched files put back
    force: bool = False             # replace files changed on the host since they were synced
    include: list = field(default_factory=list)  # patterns sent whatever the ignore rules say (selection.py)
    command_line: list | None = None  # the arguments `offload` was given, to say the command that sends a file


def say(message: str) -> None:
    print(f"offload: {message}", file=sys.stderr, flush=True)


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def ask_host_key(target, key) -> bool:
    """In a terminal, show the fingerprint and ask, as ssh does; elsewhere refuse."""
    if not interactive():
        return False
    from offload.transport.hostkeys import fingerprint

    print(f"The authenticity of host {target.name} ({target.known_hosts_name}) can't be established.\n"
          f"{key.get_name()} key fingerprint is {fingerprint(key)}.", file=sys.stderr)
    answer = input("Trust this key and continue connecting? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def script_in_project(root: Path, script: str) -> str:
    path = Path(script)
    absolute = (path if path.is_absolute() else root / path).resolve()
    if not absolute.is_file():
        raise OffloadError(f"script {script} not found in {root}", hint="run offload from your project's directory, or pass --project DIR")
    try:
        return absolute.relative_to(root).as_posix() if path.is_absolute() else script
    except ValueError:
        raise OffloadError(f"script {script} is outside the project {root}") from None


def connect_target(registry, host_name: str | None, timeout: float, no_fallback: bool):
    """(target, client) for the chosen host, or (None, None) for a local run, saying why."""
    name = host_name or registry.default_name
    if name is None:
        if no_fallback:
            raise OffloadError("no host registered and --no-fallback given", hint="offload hosts add NAME [user@]hostname")
        say("no host registered: running locally on this machine's CPU (add one with `offload hosts add`)")
        return None, None
    target = resolve(name, registry.get(name))
    try:
        return target, ssh.connect(target, timeout, confirm=ask_host_key)
    except HostUnreachable as exc:
        if no_fallback:
            raise
        say(f"{name} ({target.address}) is unreachable ({exc.reason}): running locally on this machine's CPU instead")
        return None, None


def open_agent(target, client):
    agent = agents.start_remote(client, target) if target else agents.start_local()
    if not agent.hello.get("has_torch"):
        agent.close()
        where = f"on {target.name}" if target else "on this machine"
        raise RemoteError(f"python {agent.hello['python']} {where} has no torch",
                          hint="install torch there, or set python for this host in hosts.yaml to one that has it")
    return agent


@dataclass
class JobPlan:
    """What runs, where: the project, its directory on the target, the command and its processes."""
    root: Path
    cwd: str
    script: str
    args: list
    nproc: int
    host_env: dict
    tree: dict | None = None  # {"stage": ID or None}: the synced tree the host keeps for this run (tree.py)
    selection: object = None  # selection.Selection sent to the host; None for a local run
    missing: object = None    # diagnose.Missing: set when the run failed for want of a file that was not sent


def run(options: RunOptions) -> int:
    root = project_root_of(options.project)
    put_back_from = None  # for --resume: the run's files dir, and its files checked to be what fetch wrote there
    if len(options.hosts) > 1 and options.resume:
        raise OffloadError("--resume works with one host", hint="resume on one host, or run again across them")
    if options.resume:
        options, put_back_from = resumed(root, options)
    elif not options.script:
        raise OffloadError("missing SCRIPT", hint="offload run [OPTIONS] SCRIPT [ARGS...]")
    script = script_in_project(root, options.script)
    selection = None
    registry = hosts.load()
    if options.host or options.hosts or registry.default_name:
        from offload.sync.ignore import explain
        from offload.sync.selection import select_project

        selection = select_project(root, options.include)
        if script not in {e.path for e in selection.entries}:
            rule = explain(root, script) or "an ignore rule"
            raise OffloadError(f"{script} would not be synced: excluded by {rule}",
                               hint=f"re-include it with `!{script}` (and `!DIR/` for an excluded directory) in .offloadignore")
    if len(options.hosts) > 1:
        from offload.runs import multinode

        return multinode.run(options, root, script, selection, registry)
    target, client = connect_target(registry, options.host, options.connect_timeout, options.no_fallback)
    with ExitStack() as cleanup:
        link = Link(target, client, None, options.connect_timeout)
        cleanup.callback(link.close)
        link.agent = open_agent(target, client)
        if target:
            from offload.sync.push import sync_project

            synced = sync_project(link.agent, root, target.workdir, selection=selection, for_run=True,
                                  force=options.force)
            plan = JobPlan(root, synced.project_dir, script, options.args, options.nproc_per_node or target.gpus,
                           target.env, {"stage": synced.stage}, selection)
            if put_back_from is not None:
                from offload.sync.push import put_back

                put_back(link.agent, *put_back_from, synced.project_dir)
        else:
            plan = JobPlan(root, str(root), script, options.args, options.nproc_per_node or 1, {})
            if put_back_from is not None:
                copy_back(*put_back_from, root)
        run_setup(link, target, root, plan.cwd, options.reconnect_for, tree=plan.tree)  # when its inputs changed
        code = launch_and_follow(link, plan, options)
    if plan.missing is not None and interactive() and ask_to_send(plan.missing):
        from dataclasses import replace

        return run(replace(options, include=[*options.include, plan.missing.path],
                           command_line=plan.missing.command_line))
    return code


def resumed(root: Path, options: RunOptions) -> tuple:
    """For --resume RUN: the options with RUN's command (unless SCRIPT was given), and RUN's fetched files (its
    files dir, and the entries in it that fetches of RUN wrote; anything else there refuses the resume)."""
    from dataclasses import replace

    from offload.runs.reach import agent_for, find_run

    previous = find_run(root, options.resume)
    if not options.script:
        if not previous.get("script"):
            raise OffloadError(f"run {previous['run_id']} has no recorded command to run again",
                               hint=f"give it: offload run --resume {previous['run_id']} SCRIPT [ARGS...]")
        options = replace(options, script=previous["script"], args=list(previous.get("args") or []))
    from offload.sync.fetch import fetch_listed, list_run
    from offload.runs.fetched import files_dir
    from offload.runs.fetched import files_to_put_back, remember_fetched
    from offload.runs.withheld import recorded_withheld, refuse_withheld

    files = files_dir(root, previous["run_id"])
    if not files.is_dir():
        if previous.get("host") != LOCAL:
            raise OffloadError(f"run {previous['run_id']} has no fetched files to put back",
                               hint=f"fetch them first: offload fetch {previous['run_id']}")

        with agent_for(previous) as agent:  # a local run's files are here: fetching them is a copy
            listing = list_run(agent, previous, [])
            refuse_withheld(previous["run_id"], listing["withheld"])
            summary = fetch_listed(agent, listing, files)
            remember_fetched(files, summary["files"] + summary["kept"])
    refuse_withheld(previous["run_id"], recorded_withheld(previous))
    entries = files_to_put_back(files, previous["run_id"])
    say(f"resuming run {previous['run_id']}: {options.script} {' '.join(options.args)}".rstrip())
    return options, (files, entries)


def copy_back(files: Path, entries: list, root: Path) -> None:
    """A resumed run that runs locally: its fetched files go back into the project itself, never through a
    symlink that leads out of it."""
    import shutil

    from offload.sync.fetch_paths import destination

    for entry in entries:
        final = destination(root, entry.path)
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(f".{final.name}.offload-part")
        shutil.copy2(files / entry.path, part)
        os.replace(part, final)


def launch_and_follow(link, plan: JobPlan, options: RunOptions) -> int:
    from offload.mfu.measurement import RunMeasurement

    agent, target = link.agent, link.target
    run_id = runs.new_run_id()
    host_name = target.name if target else LOCAL
    argv = launch.plan_launch(agent.hello["python"], plan.script, plan.args, plan.nproc)
    run_dir = f"{plan.cwd}/.offload/runs/{run_id}" + ("" if target else "/job")
    facts = agent.request("device")
    hoststate.remember(host_name, device=facts)
    measurement = RunMeasurement(facts, plan.args, plan.nproc, target.peak_tflops if target else None,
                                 hoststate.get(host_name).get("ceiling"))
    record = runs.RunRecord(plan.root, run_id)
    record.create(host=host_name, address=target.address if target else None, argv=argv, script=plan.script,
                  args=plan.args, fallback=target is None, project_dir=plan.cwd, run_dir=run_dir,
                  **measurement.start_meta())
    report_busy_gpus(facts.get("compute_apps"), host_name)
    warning = detach_warning(facts, host_name) if options.detach and target else None
    if warning:  # logind on the host would end the run as this SSH session closes
        say(warning)
    lock = HOST_LOCK if target else None  # one job per host account, whatever the workdir; none on the laptop
    started = agent.request("start", run_dir=run_dir, cwd=plan.cwd, argv=argv, env=launch.job_env(plan.host_env, run_id),
                            lock=lock, wait=not options.no_wait, run_id=run_id, laptop=socket.gethostname(),
                            tree=plan.tree)
    where = target.name if target else "this machine"
    if started["state"] == "failed":  # its supervisor failed before the job could start
        return finish(record, started)
    if started["state"] == "busy":
        record.end(state="busy", exit_code=BUSY_EXIT)
        say(f"{where} is busy: {describe_holder(started.get('holder'))}; not waiting (--no-wait)")
        return BUSY_EXIT
    if started["state"] == "waiting":
        say(f"{where} is busy: {describe_holder(started.get('holder'))}; run {run_id} waits for it "
            "(Ctrl-C detaches; --no-wait gives up instead)")
    else:
        say(f"run {run_id} started on {where} (pid {started.get('pid')}): {measurement.device.label}, {measurement.device.dtype}")
    if options.detach:
        record.update(detached=True)
        say(f"detached: follow it with `offload logs {run_id} -f`, stop it with `offload stop {run_id}`")
        return 0
    sink = stream.RunOutput(record.dir, tracker=measurement.tracker)
    try:
        if target is None:
            with stop_on_interrupt(record.run_id, started.get("pgid")):
                finished = follow_run(link, run_dir, sink, 0)
        else:
            try:
                finished = follow_run(link, run_dir, sink, options.reconnect_for)
            except KeyboardInterrupt:  # the laptop was only watching: the run goes on unless asked to stop
                sink.close()
                return interrupted(link, record, run_dir)
    finally:
        sink.close()
    code = finish(record, finished)
    report(record, measurement, plan.script, plan.args, plan.root, local=target is None)
    if code and plan.selection is not None:
        plan.missing = diagnose_failure(record, plan, options)
    if options.fetch:
        from offload.runs.fetched import fetch_run

        fetch_run(link.agent, plan.root, record.meta, options.fetch)
    return code


def diagnose_failure(record, plan: JobPlan, options: RunOptions):
    """After a failed run: the file its output says is missing, when the laptop has it and did not send it."""
    from offload.runs.diagnose import find_missing

    try:
        output = (record.dir / "output.log").read_text(errors="replace")
    except OSError:
        return None
    command_line = options.command_line
    if command_line is None:  # run() called directly, not from the command line: the plainest equivalent
        command_line = ["run", *(["--host", options.host] if options.host else []), options.script, *options.args]
    missing = find_missing(output, plan.cwd, plan.root, plan.selection, record.meta.get("host", "the host"),
                           command_line, options.script, options.args)
    if missing is not None:
        say(missing.message)
    return missing


def ask_to_send(missing) -> bool:
    """In a terminal, after the diagnosis: send the file and run again? (default yes)."""
    try:
        return input("send it and run again? [Y/n] ").strip().lower() in ("", "y", "yes")
    except (EOFError, KeyboardInterrupt):
        return False


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another run holds it"
    since = time.strftime("%H:%M:%S", time.localtime(holder["since"])) if holder.get("since") else "?"
    who = f" from {holder['laptop']}" if holder.get("laptop") else ""
    return f"run {holder.get('run_id', '?')}{who} holds it since {since}"


def report_busy_gpus(compute_apps: list | None, host: str) -> None:
    """GPU processes on the host that no offload run started: they take memory and time from this one."""
    others = [app for app in compute_apps or [] if not app.get("offload_run")]
    if others:
        listed = ", ".join(f"pid {app['pid']} {app.get('name') or '?'} ({app.get('used_memory_mib') or '?'} MiB)"
                           for app in others)
        say(f"the GPUs of {host} are also busy with processes offload did not start: {listed}")


def ask_to_stop(where: str) -> bool:
    """After Ctrl-C while following: in a terminal, whether to stop the run on `where` too (default no)."""
    if not interactive():
        return False
    try:
        return input(f"\nstop the run on {where} too? [y/N] ").strip().lower() in ("y", "yes")
    except (EOFError, KeyboardInterrupt):
        return False


def interrupted(link, record, run_dir: str) -> int:
    """Ctrl-C while following a remote run: in a terminal, ask whether to stop it too; else detach."""
    name = link.target.name
    if not ask_to_stop(name):
        say(f"detached: run {record.run_id} goes on on {name}; `offload logs {record.run_id} -f` follows it again")
        record.update(detached=True)
        return 130
    link.reopen()  # the interrupted stream may be mid-message: talk to the host afresh
    stopped = link.agent.request("stop", run_dir=run_dir, grace=10, timeout=60)
    say(describe_stop(record.run_id, name, stopped))
    record.end(stopped=True)
    return 130


def describe_stop(run_id: str, host: str, stopped: dict) -> str:
    if not stopped.get("signalled"):
        return f"run {run_id} on {host} was not running ({stopped.get('state')}); nothing to stop"
    if stopped["signalled"] == "SIGKILL":
        return f"run {run_id} on {host} ignored SIGTERM for the grace period: sent SIGKILL to its process group"
    return f"sent SIGTERM to run {run_id}'s process group on {host}; it has ended"


def describe_failed(run_id: str, host: str, status: dict) -> str:
    """A run whose supervisor failed (see remote_agent/supervisor_error.py), in one line."""
    return f"run {run_id} failed on {host}: {status.get('error')} (fix that, then run again)"


def finish(record, finished: dict) -> int:
    code = stream.exit_code_of(finished)
    record.end(exit_code=code, signal=finished.get("signal"), state=finished.get("state"))
    if finished.get("state") == "failed":
        say(describe_failed(record.run_id, record.meta.get("host", "the host"), finished))
    elif finished.get("state") == "lost":
        say(f"run {record.run_id} was lost: its supervisor died without recording an exit")
    elif finished.get("signal"):
        say(f"run {record.run_id} was killed by {finished['signal']}")
    elif code:
        say(f"run {record.run_id} exited with code {code}")
    return code


def report(record, measurement, script: str, args: list, root: Path, local: bool) -> None:
    """MFU and friends into meta.json; the summary table, estimates and hints to the terminal."""
    from offload.mfu.report import print_summary, summary_rows
    from offload.runs.estimates import gpu_estimates

    figures = measurement.end_meta()
    record.update(**figures)
    if not figures["iterations"]:
        say(f"MFU n/a: {figures['mfu_reason']}")
        return
    extra = gpu_estimates(figures, args, script, root) if local else []
    print_summary(summary_rows(measurement, figures, runs.duration_s(record.meta)), extra)
    if figures["mfu"] is None or figures["mfu"] < 0.5:
        for hint in measurement.hints(figures):
            say(f"hint: {hint}")


class stop_on_interrupt:
    """Ctrl-C during a local run stops the job (SIGTERM to its process group; a second Ctrl-C, SIGKILL),
    and the output is followed to the end so the log and the exit status are complete."""

    def __init__(self, run_id: str, pgid: int | None):
        self.run_id, self.pgid, self.presses = run_id, pgid, 0

    def handle(self, signum, frame):
        self.presses += 1
        say(f"stopping local run {self.run_id}" if self.presses == 1 else "killing it")
        if self.pgid:
            try:
                os.killpg(self.pgid, signal.SIGTERM if self.presses == 1 else signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def sync_only(host_name: str | None, project: Path | None, connect_timeout: float, include: list | tuple = (),
              force: bool = False) -> int:
    root = project_root_of(project)
    registry = hosts.load()
    name = host_name or registry.default_name
    if name is None:
        raise OffloadError("no host to sync to", hint="offload hosts add NAME [user@]hostname")
    from offload.transport.links import open_link
    from offload.sync.push import sync_project

    target = resolve(name, registry.get(name))
    with open_link(target, connect_timeout) as link:  # a kept link may have been opened for another workdir
        result = sync_project(link.agent, root, target.workdir, include=include, force=force)
    if result.sent_files or result.deleted:

        say(f"synced {result.sent_files} changed of {result.sent_files + result.unchanged} entries "
            f"({human_size(result.sent_bytes)}), deleted {result.deleted} -> {name}:{result.project_dir}")
    return 0
