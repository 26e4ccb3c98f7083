"""`offload run`: one job of N nodes. Pick and connect the nodes (connect.py: one host, several, or this machine
as the CPU fallback), sync each, run setup, start the job under each node's supervisor, follow every node's
output, and record and report how it ended. Where a run on this machine differs, its node says so (nodes.py).

One node runs `python SCRIPT` (torchrun --standalone for several processes); several nodes run PyTorch's own
torchrun with c10d rendezvous at node 0, output prefixed by node, MFU against every node's devices, and the
first node that fails stops the others.
"""
from __future__ import annotations

import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from offload.config import hosts, hoststate
from offload.console import ask_yes_no, interactive, say
from offload.errors import OffloadError
from offload.mfu.measurement import RunMeasurement
from offload.runs import launch
from offload.runs.connect import connect_nodes, in_parallel
from offload.runs.diagnose import diagnose_failure
from offload.runs.fetched import fetch_run
from offload.runs.follow import HeldInterrupt, exit_code_of, follow_all, stop_following
from offload.runs.interrupt import INTERRUPTED_EXIT, STOP_GRACE_S, detached, stop_when_asked
from offload.runs.job_input import JobInput
from offload.runs.announce import announce_end
from offload.runs.on_exit import on_exit_hook
from offload.runs.options import RunOptions, checked, forwarded_ports
from offload.runs.outcome import BUSY_EXIT, finish, nodes_outcome, report
from offload.runs.record import RunRecord, claim_run_id, project_root_of, script_in_project
from offload.runs.resume import resumed
from offload.runs.selected import selection_for
from offload.runs.sinks import LinePrefixer, NodeOutput, StatusLine
from offload.runs.start import report_busy_gpus, say_busy, say_waiting, start_request
from offload.transport.forwarding import Forwards


@dataclass
class Job:
    """One run across its nodes, as it goes: planned, started, followed, ended."""
    options: RunOptions
    root: Path
    script: str
    nodes: list
    selection: object = None  # sync.selection.Selection the hosts were sent; None for a local run
    run_id: str = ""
    argvs: list = field(default_factory=list)  # per node
    endpoint: str | None = None  # a multi-node run's rendezvous
    record: RunRecord | None = None
    measurement: RunMeasurement | None = None
    missing: object = None  # diagnose.Missing: set when the run failed for want of a file that was not sent
    asked: bool = False  # whether to stop the run, at Ctrl-C
    stopping: bool = False  # and told yes: it is followed on to its end

    @property
    def where(self) -> str:
        return self.nodes[0].where if len(self.nodes) == 1 else f"all {len(self.nodes)} nodes"


def run(options: RunOptions) -> int:
    root, options = project_root_of(options.project), checked(options)
    put_back_from = None  # for --resume: the run's files dir, and its files checked to be what fetch wrote there
    if len(options.hosts) > 1 and options.resume:
        raise OffloadError("--resume works with one host", hint="resume on one host, or run again across them")
    if options.resume:
        options, put_back_from = resumed(root, options)
    elif not options.script:
        raise OffloadError("missing SCRIPT", hint="offload run [OPTIONS] SCRIPT [ARGS...]")
    script = launch.module_name(options.script) if options.module else script_in_project(root, options.script)
    registry = hosts.load()
    selection = selection_for(root, None if options.module else script, options, registry)
    with ExitStack() as links:
        forwards = links.enter_context(Forwards(forwarded_ports(root, options), options.bind))  # bound before all else
        nodes = connect_nodes(links, registry, options)
        forwards.attach(nodes[0].link)
        job = Job(options, root, script, nodes, None if nodes[0].fallback else selection)
        prepare(job, put_back_from)
        code = launch_and_follow(job)
    if job.missing is not None and interactive() and ask_yes_no("send it and run again?", default=True):
        return run(replace(options, include=[*options.include, job.missing.path], command_line=job.missing.command_line))
    return code


def prepare(job: Job, put_back_from) -> None:
    """Each node synced, a resumed run's files put back, and each node's setup run when its inputs changed."""
    in_parallel(job.nodes, lambda node: node.prepare(job.root, job.selection, job.options.force))
    if put_back_from is not None:
        job.nodes[0].put_back(*put_back_from, job.root)
    if len(job.nodes) == 1:
        job.nodes[0].setup(job.root, job.options.reconnect_for)
        return

    def setup_node(node) -> None:
        prefixer = LinePrefixer(f"[{node.label}] ".encode(), sys.stdout.buffer)
        try:
            node.setup(job.root, job.options.reconnect_for, terminal=prefixer)
        finally:
            prefixer.end()
            prefixer.flush()

    in_parallel(job.nodes, setup_node)


def launch_and_follow(job: Job) -> int:
    plan_run(job)
    started = in_parallel(job.nodes, lambda node: start_node(job, node))
    with ExitStack() as watching:
        for node, state in zip(job.nodes, started):
            watching.enter_context(node.watching(job.run_id, state.get("pgid")))
        held = watching.enter_context(HeldInterrupt())  # from the host's answer on, Ctrl-C is about this run
        code = started_outcome(job, started)
        if code is not None:
            return code
        if job.options.detach or job.options.queue:
            job.record.update(detached=True)
            leave = "remove it from the line" if started[0]["state"] == "waiting" else "stop it"
            say(f"detached: follow it with `offload logs {job.run_id} -f`, {leave} with `offload stop {job.run_id}`")
            return 0
        followed = follow_to_end(job, held)
    if followed is None:  # the laptop was only watching: the run goes on (or goes on ending) on the host
        return detached(job)
    ended, first_failed = followed
    code = nodes_outcome(job.nodes, ended, first_failed, job.record)
    first = job.nodes[0]
    report(job.record, job.measurement, lambda figures: first.estimates(figures, job.options.args, job.script, job.root))
    announce_end(job.record, code)  # the bell and a desktop notification, after the summary they point to
    if job.stopping and ended[first_failed or 0].get("signal"):
        return INTERRUPTED_EXIT  # the stop ended it; a script that exited by itself has its own exit code
    if code and job.selection is not None and len(job.nodes) == 1 and not job.stopping:
        job.missing = diagnose_failure(job.record, first.project_dir, job.root, job.selection, job.options)
    if job.options.fetch:
        fetch_run(first.link.agent, job.root, job.record.meta, job.options.fetch)  # node 0's own versions
    return code


def plan_run(job: Job) -> None:
    """The run's id and directories, its device and peak (node 0's, times the nodes), each node's command, and
    its record on the laptop."""
    nodes, options = job.nodes, job.options
    all_facts = in_parallel(nodes, lambda node: node.link.agent.request("device"))
    for node, facts in zip(nodes, all_facts):
        hoststate.remember(node.target.name, device=facts)
    first = nodes[0]
    nproc = options.nproc_per_node or first.default_nproc()
    say_differing_devices(nodes, all_facts)
    job.measurement = RunMeasurement(all_facts[0], options.args, nproc, first.target.peak_tflops,
                                     hoststate.get(first.target.name).get("ceiling"), nodes=len(nodes))
    job.run_id = claim_run_id(job.root)  # only now: a run that fails before leaves no empty record behind
    for node in nodes:
        node.run_dir = node.run_dir_for(job.run_id)
    job.argvs = plan_argvs(job, nproc)
    job.record = RunRecord(job.root, job.run_id)
    job.record.create(**record_fields(job, nproc))
    for node, facts in zip(nodes, all_facts):
        report_busy_gpus(facts.get("compute_apps"), node.target.name)
        for warning in (launch.cpu_processes_warning(node.where, facts, nproc),
                        node.detach_warning(facts) if options.detach else None):
            if warning:
                say(warning)


def plan_argvs(job: Job, nproc: int) -> list:
    first = job.nodes[0]
    if len(job.nodes) == 1:
        return [launch.plan_launch(first.link.agent.hello["python"], job.script, job.options.args, nproc, job.options.module)]
    port = first.link.agent.request("free_port")["port"]
    job.endpoint = f"{launch.node_address(first.target)}:{port}"
    return [launch.plan_node_launch(node.link.agent.hello["python"], job.script, job.options.args, nproc, len(job.nodes),
                                    node.rank, job.endpoint, job.run_id, launch.node_address(node.target), job.options.module)
            for node in job.nodes]


def record_fields(job: Job, nproc: int) -> dict:
    first = job.nodes[0]
    fields = dict(host=first.target.name, address=first.target.address, argv=job.argvs[0], script=job.script,
                  args=job.options.args, module=job.options.module, fallback=first.fallback,
                  project_dir=first.project_dir, run_dir=first.run_dir, **job.measurement.start_meta())
    if len(job.nodes) > 1:
        fields.update(rdzv_endpoint=job.endpoint, nproc_per_node=nproc,
                      nodes=[{"host": node.target.name, "address": node.target.address, "argv": argv,
                              "project_dir": node.project_dir, "run_dir": node.run_dir}
                             for node, argv in zip(job.nodes, job.argvs)])
    return fields


def say_differing_devices(nodes: list, all_facts: list) -> None:
    """The peak of a multi-node run is node 0's device times the nodes: say so rather than mislead."""
    first = launch.device_name(all_facts[0])
    differing = [(node, facts) for node, facts in zip(nodes, all_facts) if launch.device_name(facts) != first]
    if differing:
        say(f"{', '.join(f'{node.label} has {launch.device_name(facts)}' for node, facts in differing)}, "
            f"node0 {first}: MFU counts every node as node 0")


def start_node(job: Job, node) -> dict:
    return start_request(node.link.agent, run_dir=node.run_dir, cwd=node.project_dir, argv=job.argvs[node.rank],
                         env=launch.job_env(node.target.env, job.run_id, job.options.env, job.measurement.device),
                         lock=node.lock,
                         wait=not job.options.no_wait, run_id=job.run_id, tree=node.tree,
                         stdin=not job.options.detach and len(job.nodes) == 1, on_exit=on_exit_hook(job, node),
                         python_path=[node.project_dir])  # the project's own packages import from any script


def started_outcome(job: Job, started: list) -> int | None:
    """The exit code when the job did not start on every node (the others are stopped), else None, said."""
    states = [state["state"] for state in started]
    if "failed" in states or "busy" in states:
        for node, state in zip(job.nodes, started):
            if state["state"] in ("running", "waiting"):
                node.stop(grace=0)
    if "failed" in states:  # its supervisor failed before the job could start
        return finish(job.record, started[states.index("failed")])
    if "busy" in states:
        job.record.end(started[states.index("busy")], state="busy", exit_code=BUSY_EXIT)
        for node, state in zip(job.nodes, started):
            if state["state"] == "busy":
                say_busy(node.where, state)
        return BUSY_EXIT
    for node, state in zip(job.nodes, started):
        if state["state"] == "waiting":
            say_waiting(node.where, state, job.run_id, job.options.queue)
    device = job.measurement.device
    if len(job.nodes) > 1:
        say(f"run {job.run_id} started on {len(job.nodes)} nodes, rendezvous at {job.endpoint}: {device.label}, {device.dtype}")
    elif states[0] != "waiting":
        say(f"run {job.run_id} started on {job.where} (pid {started[0].get('pid')}): {device.label}, {device.dtype}")
    return None


def follow_to_end(job: Job, held: HeldInterrupt) -> tuple | None:
    """The nodes followed to their end: (each one's exit message, the first that failed); None once the laptop
    stops following (Ctrl-C, and no to stopping the run; or a second Ctrl-C). `held`: a press since the host
    answered the start, raised here."""
    while True:
        try:
            held.release()
            return follow_nodes(job)
        except KeyboardInterrupt:  # asked while following; else pressed before the followers started: ask now
            if job.asked or not stop_when_asked(job, threading.Lock(), StatusLine()):
                for node in job.nodes:  # its follower may be mid-message: the link must not serve another command
                    node.link.cut()
                return None


def follow_nodes(job: Job) -> tuple:
    """Every node's output to the terminal and the record until all have ended; the first failure stops the
    others. c10d hands out ranks in the order nodes join, so rank 0 may run on any node: every node feeds the
    tracker, and only rank 0 prints iteration lines and writes metrics (offload_metrics, nanoGPT)."""
    nodes, lock, status = job.nodes, threading.Lock(), StatusLine()
    with ExitStack() as outputs:
        combined = outputs.enter_context(open(job.record.dir / "output.log", "ab")) if len(nodes) > 1 else None
        sinks = [NodeOutput(job.record.dir, node.label if len(nodes) > 1 else None, lock, status,
                            job.measurement.tracker, combined) for node in nodes]
        for sink in sinks:
            outputs.callback(sink.close)

        def stop_the_others(failed: int, ended: list) -> None:
            if len(nodes) == 1 or job.stopping:  # asked at Ctrl-C: every node is being stopped already
                return
            with lock:
                status.clear()
                say(f"{nodes[failed].label} ended with exit code {exit_code_of(ended[failed])}: stopping the other nodes")
            for node, message in zip(nodes, ended):
                if message is None:
                    node.stop(STOP_GRACE_S)

        job_input = JobInput() if len(nodes) == 1 else None
        if job_input is not None:
            outputs.callback(job_input.stop)  # before a Ctrl-C's question reads the terminal
        return follow_all([(node.link, node.run_dir, sink) for node, sink in zip(nodes, sinks)],
                          job.options.reconnect_for, stop_the_others, lambda: asked_at_ctrl_c(job, job_input, lock, status),
                          job_input)


def asked_at_ctrl_c(job: Job, job_input, lock, status) -> None:
    """Ctrl-C while following: the job's stdin ends first, so the question reads the terminal, not the job; then
    stop the run and follow it to its end when asked to, else stop following (KeyboardInterrupt)."""
    if job_input is not None:
        job_input.stop()
    if not stop_when_asked(job, lock, status):
        stop_following()
