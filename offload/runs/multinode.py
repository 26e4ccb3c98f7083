"""`offload run --host a --host b ...`: one job across several hosts, through PyTorch's own torchrun.

Every host gets the project (synced in parallel, from one scan) and runs

    <python> -m torch.distributed.run --nnodes=K --node_rank=i --nproc_per_node=N --rdzv_backend=c10d
        --rdzv_endpoint=<node 0's address>:<a free port there> --rdzv_id=<run id> ... -- SCRIPT ARGS

under its own supervisor, as a single-host run does. Output from every node streams back with the node in
front of each line; metrics and MFU come from rank 0 (on whichever node c10d put it) against the peak of
every device in the run. When a node fails, the others are stopped and the run says which node failed
with which exit code.
"""
from __future__ import annotations

import queue
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from offload.transport import agent as agents
from offload.config import hoststate
from offload.runs import launch, record as runs, sinks as stream
from offload.transport import ssh
from offload.errors import HostUnreachable, OffloadError
from offload.runs.logout_survival import detach_warning
from offload.config.resolve import resolve
from offload.runs.setup import run_setup
from offload.transport.link import Link, follow_run, say

STOP_GRACE_S = 10.0


@dataclass
class Node:
    rank: int
    target: object  # SSHTarget
    link: Link
    project_dir: str = ""
    run_dir: str = ""
    tree: dict | None = None  # the synced tree the host keeps for this run (remote_agent/tree.py)

    @property
    def label(self) -> str:
        return f"node{self.rank} {self.target.name}"


def node_address(node: Node) -> str:
    """How the other nodes reach this one: hosts.yaml's rdzv_host, else the address the laptop uses."""
    return node.target.rdzv_host or node.target.hostname


def device_name(facts: dict) -> str:
    gpus = facts.get("gpus") or []
    return f"{len(gpus)} x {gpus[0]['name']}" if gpus else (facts.get("cpu") or {}).get("model") or "CPU"


def in_parallel(nodes: list, work) -> list:
    """work(node) for every node at once; the results in node order, or the first node's error, named."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        futures = [pool.submit(work, node) for node in nodes]
        results, failures = [], []
        for node, future in zip(nodes, futures):
            try:
                results.append(future.result())
            except OffloadError as exc:
                failures.append((node, exc))
    if failures:
        node, exc = failures[0]
        if node.target.name not in exc.message:  # say which host, unless the error already does
            exc.message = f"{node.label}: {exc.message}"
        raise exc
    return results


def connect_all(registry, names: list, timeout: float) -> list:
    """Every host connected and its agent started; no local fallback (a job across hosts needs them all)."""
    if len(set(names)) != len(names):
        raise OffloadError(f"a host is named twice in --host {' --host '.join(names)}",
                           hint="name each host once; --nproc-per-node runs several processes on one")
    nodes = [Node(rank, resolve(name, registry.get(name)), None) for rank, name in enumerate(names)]

    def open_node(node: Node) -> None:
        try:
            client = ssh.connect(node.target, timeout)  # no prompt from a thread: unknown keys are refused
        except HostUnreachable as exc:
            raise OffloadError(f"host {node.target.name} ({node.target.address}) is unreachable: {exc.reason}",
                               hint="a multi-node run needs every host; `offload hosts check` shows them") from None
        try:
            from offload.runs.job import open_agent

            node.link = Link(node.target, client, open_agent(node.target, client), timeout)
        except BaseException:
            client.close()
            raise

    try:
        in_parallel(nodes, open_node)
        refuse_one_account_twice(nodes)
    except BaseException:
        for node in nodes:
            if node.link is not None:
                node.link.close()
        raise
    return nodes


def refuse_one_account_twice(nodes: list) -> None:
    """Two registrations of one host account would each wait for the other's GPU lock (one job per account)."""
    seen = {}
    for node in nodes:
        hello = node.link.agent.hello or {}
        account = (hello.get("machine_id") or hello.get("hostname"), hello.get("home"))
        if None in account:
            continue  # an agent that does not say: nothing to compare
        if account in seen:
            raise OffloadError(f"hosts {seen[account].target.name} and {node.target.name} are one host account "
                               f"({account[1]} on {hello.get('hostname')}): it runs one job at a time",
                               hint="name each machine once; --nproc-per-node runs several processes on one")
        seen[account] = node


class LinePrefixer:
    """Bytes in, whole lines out with a prefix: to the terminal, and to the run's combined output.log."""

    def __init__(self, prefix: bytes, terminal, combined=None):
        self.prefix, self.terminal, self.combined, self.partial = prefix, terminal, combined, b""

    def write(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if lines:
            text = b"".join(self.prefix + line + b"\n" for line in lines)
            self.terminal.write(text)
            if self.combined is not None:
                self.combined.write(text)

    def flush(self) -> None:
        self.terminal.flush()
        if self.combined is not None:
            self.combined.flush()

    def end(self) -> None:
        if self.partial:
            self.write(b"\n")


class NodeOutput:
    """One node's output: its own log (byte offsets for resuming) and prefixed lines for the user, under a
    lock shared by every node, so lines from different nodes never interleave."""

    def __init__(self, record_dir: Path, node: Node, combined, lock: threading.Lock, status, tracker=None):
        node_dir = record_dir / f"node{node.rank}"
        node_dir.mkdir(parents=True, exist_ok=True)
        self.prefixer = LinePrefixer(f"[{node.label}] ".encode(), sys.stdout.buffer, combined)
        self.output = stream.RunOutput(node_dir, tracker=tracker, terminal=self.prefixer, status=status)
        self.lock, self.closed = lock, False

    @property
    def log_bytes(self) -> int:
        return self.output.log_bytes

    @property
    def metrics_bytes(self) -> int:
        return self.output.metrics_bytes

    def write(self, data: bytes) -> None:
        with self.lock:
            if not self.closed:  # a follower still running after Ctrl-C has nowhere to write
                self.output.write(data)

    def metrics(self, data: bytes) -> None:
        with self.lock:
            if not self.closed:
                self.output.metrics(data)

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.prefixer.end()
                self.output.close()


def stop_node(node: Node, grace: float = STOP_GRACE_S) -> dict:
    """Stop a node's job over a second agent on its connection (the first one is busy following)."""
    agent = agents.start_remote(node.link.client, node.target)
    try:
        return agent.request("stop", run_dir=node.run_dir, grace=grace, timeout=grace + 60)
    finally:
        agent.close()


def run(options, root: Path, script: str, selection, registry) -> int:
    from offload.mfu.measurement import RunMeasurement
    from offload.runs.job import BUSY_EXIT, HOST_LOCK, report
    from offload.sync.push import sync_project

    with ExitStack() as cleanup:
        nodes = connect_all(registry, options.hosts, options.connect_timeout)
        for node in nodes:
            cleanup.callback(node.link.close)
        say(f"multi-node run on {len(nodes)} hosts: {', '.join(node.label for node in nodes)}")

        def sync_node(node: Node):
            return sync_project(node.link.agent, root, node.target.workdir, selection=selection, for_run=True,
                                force=options.force)

        for node, synced in zip(nodes, in_parallel(nodes, sync_node)):
            node.project_dir, node.tree = synced.project_dir, {"stage": synced.stage}

        def setup_node(node: Node) -> None:  # each host's `setup`, when its inputs changed (setup.py)
            prefixer = LinePrefixer(f"[{node.label}] ".encode(), sys.stdout.buffer)
            try:
                run_setup(node.link, node.target, root, node.project_dir, options.reconnect_for, terminal=prefixer,
                          tree=node.tree)
            finally:
                prefixer.end()
                prefixer.flush()

        in_parallel(nodes, setup_node)
        first = nodes[0]
        nproc = options.nproc_per_node or first.target.gpus
        port = first.link.agent.request("free_port")["port"]
        endpoint = f"{node_address(first)}:{port}"
        run_id = runs.new_run_id()
        for node in nodes:
            node.run_dir = f"{node.project_dir}/.offload/runs/{run_id}"
        all_facts = in_parallel(nodes, lambda node: node.link.agent.request("device"))
        facts = all_facts[0]
        hoststate.remember(first.target.name, device=facts)
        differing = [node for node, node_facts in zip(nodes, all_facts) if device_name(node_facts) != device_name(facts)]
        if differing:  # the peak below is node 0's device times the nodes: say so rather than mislead
            say(f"{', '.join(f'{node.label} has {device_name(all_facts[node.rank])}' for node in differing)}, "
                f"node0 {device_name(facts)}: MFU counts every node as node 0")
        if options.detach:  # a host's logind may end the run as we disconnect
            for node, node_facts in zip(nodes, all_facts):
                warning = detach_warning(node_facts, node.target.name)
                if warning:
                    say(warning)
        measurement = RunMeasurement(facts, options.args, nproc, first.target.peak_tflops,
                                     hoststate.get(first.target.name).get("ceiling"), nodes=len(nodes))
        argvs = [launch.plan_node_launch(node.link.agent.hello["python"], script, options.args, nproc, len(nodes),
                                         node.rank, endpoint, run_id, node_address(node)) for node in nodes]
        record = runs.RunRecord(root, run_id)
        record.create(host=first.target.name, address=first.target.address, argv=argvs[0], script=script,
                      args=options.args, fallback=False, project_dir=first.project_dir, run_dir=first.run_dir,
                      rdzv_endpoint=endpoint, nproc_per_node=nproc,
                      nodes=[{"host": node.target.name, "address": node.target.address, "argv": argv,
                              "project_dir": node.project_dir, "run_dir": node.run_dir}
                             for node, argv in zip(nodes, argvs)],
                      **measurement.start_meta())

        def start_node(node: Node) -> dict:
            return node.link.agent.request(
                "start", run_dir=node.run_dir, cwd=node.project_dir, argv=argvs[node.rank],
                env=launch.job_env(node.target.env, run_id), lock=HOST_LOCK, wait=not options.no_wait, run_id=run_id,
                laptop=socket.gethostname(), tree=node.tree)

        started = in_parallel(nodes, start_node)
        busy = [node for node, state in zip(nodes, started) if state["state"] == "busy"]
        if busy:
            for node, state in zip(nodes, started):
                if state["state"] != "busy":
                    stop_node(node, grace=0)
            record.end(state="busy", exit_code=BUSY_EXIT)
            say(f"{', '.join(node.target.name for node in busy)} busy; not waiting (--no-wait)")
            return BUSY_EXIT
        say(f"run {run_id} started on {len(nodes)} nodes, rendezvous at {endpoint}: "
            f"{measurement.device.label}, {measurement.device.dtype}")
        if options.detach:
            record.update(detached=True)
            say(f"detached: follow it with `offload logs {run_id} -f`, stop it with `offload stop {run_id}`")
            return 0
        try:
            ended, first_failed = follow_nodes(nodes, record, measurement, options.reconnect_for)
        except KeyboardInterrupt:
            return interrupted(nodes, record)
        code = node_outcome(nodes, ended, first_failed, record)
        report(record, measurement, script, options.args, root, local=False)
        if options.fetch:
            from offload.runs.fetched import fetch_run

            fetch_run(first.link.agent, root, record.meta, options.fetch)  # node 0's own versions
        return code


def follow_nodes(nodes: list, record, measurement, reconnect_for: float) -> tuple:
    """Follow every node at once until all have ended; the first failure stops the others. Returns each
    node's exit message, in node order, and the rank of the node that failed first (None if none did)."""
    lock = threading.Lock()
    status = stream.StatusLine()
    combined = open(record.dir / "output.log", "ab")
    # c10d hands out ranks in the order nodes join, so rank 0 may run on any node: every node feeds the
    # tracker, and only rank 0 prints iteration lines and writes metrics (offload_metrics, nanoGPT).
    sinks = [NodeOutput(record.dir, node, combined, lock, status, measurement.tracker) for node in nodes]
    finished = queue.Queue()

    def follow(node: Node, sink: NodeOutput) -> None:
        try:
            finished.put((node.rank, follow_run(node.link, node.run_dir, sink, reconnect_for)))
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            finished.put((node.rank, exc))

    for node, sink in zip(nodes, sinks):
        threading.Thread(target=follow, args=(node, sink), daemon=True).start()
    ended, first_failed = [None] * len(nodes), None
    try:
        for _ in nodes:
            rank, result = finished.get()
            if isinstance(result, Exception):
                raise result
            ended[rank] = result
            if stream.exit_code_of(result) != 0 and first_failed is None:
                first_failed = rank
                with lock:
                    status.clear()
                    say(f"{nodes[rank].label} ended with exit code {stream.exit_code_of(result)}: "
                        "stopping the other nodes")
                for other in nodes:
                    if ended[other.rank] is None:
                        stop_node(other)
    finally:
        for sink in sinks:
            sink.close()
        combined.close()
    return ended, first_failed


def catch_up(nodes: list, record, follow: bool, reconnect_for: float) -> list:
    """`offload logs` of a multi-node run: every node's output since the laptop's last byte, prefixed, up to
    now (or, following, to the end); each node's exit or eof message, in node order."""
    lock, status = threading.Lock(), stream.StatusLine()
    with open(record.dir / "output.log", "ab") as combined:
        sinks = [NodeOutput(record.dir, node, combined, lock, status) for node in nodes]
        try:
            if not follow:
                return [stream.follow(node.link.agent, node.run_dir, sink.log_bytes, sink, sink.metrics_bytes,
                                      until_now=True) for node, sink in zip(nodes, sinks)]
            with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                return list(pool.map(lambda pair: follow_run(pair[0].link, pair[0].run_dir, pair[1], reconnect_for),
                                     zip(nodes, sinks)))
        finally:
            for sink in sinks:
                sink.close()


def interrupted(nodes: list, record) -> int:
    """Ctrl-C while following: as for one host, ask whether to stop the run (on every node) or detach."""
    from offload.runs.job import ask_to_stop

    if not ask_to_stop(f"all {len(nodes)} nodes"):
        record.update(detached=True)
        say(f"detached: run {record.run_id} goes on on its nodes; `offload logs {record.run_id} -f` follows it again")
        return 130
    for node in nodes:
        stop_node(node)
    record.end(stopped=True)
    say(f"stopped run {record.run_id} on every node")
    return 130


def node_outcome(nodes: list, ended: list, first_failed: int | None, record) -> int:
    """The run's exit code: 0 when every node succeeded, else that of the node that failed first, named."""
    from offload.runs.job import finish

    record.update(node_exits=[stream.exit_code_of(message) for message in ended])
    if first_failed is None:
        return finish(record, ended[0])
    node, message = nodes[first_failed], ended[first_failed]
    code = finish(record, message)
    what = f"was killed by {message['signal']}" if message.get("signal") else f"failed with exit code {code}"
    say(f"{node.label} ({node.target.address}) {what}; the other nodes were stopped")
    record.update(failed_node=node.rank, failed_host=node.target.name)
    return code
