"""The hosts bench_link.py syncs to: an sshd in a network namespace behind a `tc tbf` rate limit, or on loopback.

    this namespace: bridge ─ veth offvNNNNa ─┬─ namespace offnsNNNNa: offl0 10.X.Y.2, sshd :2222
                    (tbf on offvNNNNa: laptop -> host) (tbf on offl0: host -> laptop)

The network is the tests' (tests/netns_hosts.py, which builds two namespaced hosts; the bench uses the first).
Bytes on the wire are the laptop end's counters: tx_bytes (to the host) plus rx_bytes (from it), headers included.
"""
from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from netns_hosts import netns_exec, netns_hosts  # tests/ is on sys.path: bench_link.py puts it there
from sshd_server import SshServer

TBF = ["burst", "256kb", "latency", "50ms"]  # the shape; only the rate changes between runs
TC_TIMEOUT_S = 10


@dataclass
class Link:
    """One host to sync to: its sshd, the commands that reach its namespace, and the counters of the link."""
    server: SshServer
    label: str                 # "100mbit", "1gbit", "loopback"
    counters: tuple            # Paths of byte counters; their summed delta is the bytes on the wire
    laptop_iface: str | None = None
    namespace: str | None = None
    host_iface: str | None = None

    def wire_bytes(self) -> int:
        return sum(int(Path(counter).read_text()) for counter in self.counters)

    def limit(self, rate: str) -> None:
        """tbf at rate on both ends of the veth (replacing the last one), so both directions are limited."""
        tc(["qdisc", "replace", "dev", self.laptop_iface, "root", "tbf", "rate", rate, *TBF])
        tc(["qdisc", "replace", "dev", self.host_iface, "root", "tbf", "rate", rate, *TBF], self.namespace)
        self.label = rate

    def unlimit(self) -> None:
        """Remove both qdiscs (a deleted veth takes its qdisc along; this runs first, so none is left either way)."""
        for iface, namespace in ((self.laptop_iface, None), (self.host_iface, self.namespace)):
            tc(["qdisc", "del", "dev", iface, "root"], namespace, check=False)


def tc(args: list, namespace: str | None = None, check: bool = True) -> None:
    argv = ["tc", *args] if namespace is None else netns_exec(namespace, ["tc", *args])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TC_TIMEOUT_S)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")


@contextlib.contextmanager
def namespaced_link(directory: Path) -> Iterator[Link]:
    """A host in its own namespace, unlimited until Link.limit(); everything is removed on the way out."""
    with netns_hosts(directory) as hosts:
        veth = hosts.veths[0]
        counters = (Path(f"/sys/class/net/{veth}/statistics/tx_bytes"),
                    Path(f"/sys/class/net/{veth}/statistics/rx_bytes"))
        link = Link(hosts.servers[0], "unlimited", counters, veth, hosts.namespaces[0], hosts.iface)
        try:
            yield link
        finally:
            link.unlimit()


@contextlib.contextmanager
def loopback_link(directory: Path) -> Iterator[Link]:
    """An sshd on 127.0.0.1: on loopback every packet is counted once in lo's tx_bytes (and again in rx), the
    packets of anything else on the machine talking over loopback too: these wire bytes are an upper bound."""
    with SshServer(directory) as server:
        yield Link(server, "loopback", (Path("/sys/class/net/lo/statistics/tx_bytes"),))
