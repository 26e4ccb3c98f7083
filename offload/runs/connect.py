"""The nodes a run goes to, connected: the named host (or the default one), every host of a multi-node run, or
this machine when no host is registered or the one named cannot be reached (saying so).

A host that answers but refuses us (authentication, host key) is an error, never a fallback; a multi-node run
has no fallback at all: it needs every host.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from offload.config.local_target import LocalTarget
from offload.config.resolve import resolve
from offload.console import say
from offload.errors import HostUnreachable, OffloadError
from offload.runs.nodes import LocalNode, RemoteNode
from offload.transport.links import open_link


def in_parallel(nodes: list, work) -> list:
    """work(node) for every node at once (one node: in this thread, so Ctrl-C stops it); the results in node
    order, or the first node's error, naming the node unless it does."""
    if len(nodes) == 1:
        return [work(nodes[0])]
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
        if node.target.name not in exc.message:
            exc.message = f"{node.label}: {exc.message}"
        raise exc
    return results


def connect_nodes(stack, registry, options) -> list:
    """The run's nodes, their links entered on `stack` (an ExitStack) and their Python checked for torch."""
    nodes = connect_all(stack, registry, options) if len(options.hosts) > 1 else [connect_one(stack, registry, options)]
    for node in nodes:
        node.check_torch()
    return nodes


def connect_one(stack, registry, options):
    name = options.host or registry.default_name
    if name is None:
        if options.no_fallback:
            raise OffloadError("no host registered and --no-fallback given", hint="offload hosts add NAME [user@]hostname")
        say("no host registered: running locally on this machine's CPU (add one with `offload hosts add`)")
        return local_node(stack)
    target = resolve(name, registry.get(name))
    try:
        return RemoteNode(0, target, stack.enter_context(open_link(target, options.connect_timeout)))
    except HostUnreachable as exc:
        if options.no_fallback:
            raise
        say(f"{name} ({target.address}) is unreachable ({exc.reason}): running locally on this machine's CPU instead")
        return local_node(stack)


def local_node(stack) -> LocalNode:
    target = LocalTarget()
    return LocalNode(0, target, stack.enter_context(open_link(target)))


def connect_all(stack, registry, options) -> list:
    """Every host connected at once, no host key prompt from a thread (unknown keys are refused)."""
    names = options.hosts
    if len(set(names)) != len(names):
        raise OffloadError(f"a host is named twice in --host {' --host '.join(names)}",
                           hint="name each host once; --nproc-per-node runs several processes on one")
    nodes = [RemoteNode(rank, resolve(name, registry.get(name)), None) for rank, name in enumerate(names)]
    opened = {}

    def open_node(node) -> None:
        context = open_link(node.target, options.connect_timeout, confirm=None)
        try:
            node.link = context.__enter__()
        except HostUnreachable as exc:
            raise OffloadError(f"host {node.target.name} ({node.target.address}) is unreachable: {exc.reason}",
                               hint="a multi-node run needs every host; `offload hosts check` shows them") from None
        opened[node.rank] = context

    try:
        in_parallel(nodes, open_node)
    finally:  # the links that opened close with the stack, whatever failed
        for rank in sorted(opened):
            stack.push(opened[rank])
    refuse_one_account_twice(nodes)
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
