"""Two hosts on a network of their own: each a real sshd in its own Linux network namespace.

    test's namespace: bridge offbrNNNN 10.X.Y.1/24
        ├─ veth ─ namespace offnsNNNNa: offl0 10.X.Y.2/24, lo, sshd on :2222
        └─ veth ─ namespace offnsNNNNb: offl0 10.X.Y.3/24, lo, sshd on :2222

The 10.X.Y.0/24 exists only on this machine. Both namespaces name their end `offl0`, so one
GLOO_SOCKET_IFNAME serves both ranks of a gloo job. Needs root and iproute2.

Teardown runs in reverse even when the test fails: servers (and every process left in a namespace)
stopped by pid, namespaces deleted, bridge deleted, the iptables rule (if one was needed) removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sshd_server import SshServer, kill_and_wait, read_proc

IFACE = "offl0"  # each namespace's end of its veth pair: GLOO_SOCKET_IFNAME for both ranks
SSH_PORT = 2222  # not 22: known_hosts writes port 22 without brackets, and SshServer writes brackets
SECOND_OCTETS = range(200, 255)  # 10.200.0.0 .. 10.254.255.0: far from the usual 10.0/10.1 LANs
LOCK_PATH = Path("/run/offload-netns.lock")  # concurrent test runs choose subnets and names one at a time
IP_TIMEOUT_S = 10.0
REACH_TIMEOUT_S = 5.0
BRIDGE_NF_CALL_IPTABLES = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


class NetnsError(RuntimeError):
    """The network could not be built or torn down; the message says which command and why."""


@dataclass
class NetnsHosts:
    subnet: ipaddress.IPv4Network  # 10.X.Y.0/24
    bridge: str  # in the test's namespace, with the subnet's .1
    bridge_address: str
    namespaces: tuple[str, str]
    addresses: tuple[str, str]  # .2 in namespaces[0], .3 in namespaces[1]
    iface: str = IFACE
    servers: list[SshServer] = field(default_factory=list)  # servers[i] runs in namespaces[i]
    forward_rule: list[str] | None = None  # the iptables rule spec added for the bridge, if one was needed
    stray_pids: list[int] = field(default_factory=list)  # processes teardown found in a namespace and killed

    @property
    def veths(self) -> tuple[str, str]:
        """The test's-namespace ends of the veth pairs (plugged into the bridge)."""
        return tuple(f"offv{name[len('offns'):]}" for name in self.namespaces)


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def netns_exec(namespace: str, argv: list[str]) -> list[str]:
    """argv run inside namespace; `ip netns exec` execs it, so a Popen's pid is argv's own."""
    return ["ip", "netns", "exec", namespace, *argv]


def networks_in_use() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this namespace's addresses, and of its routes narrower than /16."""
    networks = [ipaddress.ip_interface(line.split()[3]).network for line in ip("-4", "-o", "addr", "show").splitlines()]
    for line in ip("-4", "route", "show").splitlines():
        destination = line.split()[0]
        if destination != "default":
            network = ipaddress.ip_network(destination, strict=False)
            if network.prefixlen >= 16:
                networks.append(network)
    return networks


def choose_subnet(in_use: list[ipaddress.IPv4Network], rng: random.Random) -> ipaddress.IPv4Network:
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.{rng.choice(SECOND_OCTETS)}.{rng.randrange(256)}.0/24")
        if not any(candidate.overlaps(network) for network in in_use):
            return candidate
    raise NetnsError(f"no free 10.{SECOND_OCTETS.start}-{SECOND_OCTETS.stop - 1}.x.0/24 after 200 tries")


def choose_token() -> str:
    """4 hex digits that no bridge, veth or namespace of another run uses."""
    for _ in range(100):
        token = secrets.token_hex(2)
        names = (f"offbr{token}", f"offv{token}a", f"offv{token}b")
        if not any(Path("/sys/class/net", name).exists() for name in names) and not any(
                Path("/run/netns", f"offns{token}{side}").exists() for side in "ab"):
            return token
    raise NetnsError("no unused offbr/offns name after 100 tries")


def forward_rule_needed(bridge_calls_iptables: bool, forward_chain: list[str] | None) -> bool:
    """Whether frames between two ports of our bridge could be dropped by iptables' FORWARD chain.

    With br_netfilter loaded and bridge-nf-call-iptables=1 (Docker does both), bridged IPv4 goes through
    FORWARD; Docker also sets its policy to DROP. forward_chain is `iptables -S FORWARD`, None without iptables.
    """
    return bridge_calls_iptables and forward_chain is not None and forward_chain != ["-P FORWARD ACCEPT"]


def read_forward_chain() -> list[str] | None:
    if shutil.which("iptables") is None:
        return None
    done = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if done.returncode != 0:
        raise NetnsError(f"`iptables -S FORWARD` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.splitlines()


def bridge_calls_iptables() -> bool:
    try:
        return BRIDGE_NF_CALL_IPTABLES.read_text().strip() == "1"
    except FileNotFoundError:  # br_netfilter not loaded: bridged frames never meet iptables
        return False


def iptables(*args: str) -> None:
    done = subprocess.run(["iptables", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if done.returncode != 0:
        raise NetnsError(f"`iptables {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")


def delete_namespace(hosts: NetnsHosts, namespace: str, veth: str) -> None:
    """Kill by pid whatever still runs in namespace (jobs that left sshd's tree), then delete its veth and it.

    The veth goes first and by name: deleting one end deletes the other at once, while a deleted
    namespace is dismantled later by the kernel, so its veth would outlive teardown for a moment.
    """
    procs = [read_proc(int(pid)) for pid in ip("netns", "pids", namespace).split()]
    stray = [proc for proc in procs if proc is not None and proc.state != "Z"]
    hosts.stray_pids.extend(proc.pid for proc in stray)
    kill_and_wait(stray)
    if Path("/sys/class/net", veth).exists():
        ip("link", "del", veth)
    ip("netns", "del", namespace)


def add_namespace(stack: contextlib.ExitStack, hosts: NetnsHosts, namespace: str, veth: str, address: str) -> None:
    ip("netns", "add", namespace)
    stack.callback(delete_namespace, hosts, namespace, veth)
    ip("link", "add", veth, "type", "veth", "peer", "name", IFACE, "netns", namespace)
    ip("link", "set", veth, "master", hosts.bridge, "up")
    ip("-n", namespace, "addr", "add", f"{address}/{hosts.subnet.prefixlen}", "dev", IFACE)
    ip("-n", namespace, "link", "set", IFACE, "up")
    ip("-n", namespace, "link", "set", "lo", "up")  # torchrun's store and gloo also talk over loopback


def check_reach(hosts: NetnsHosts) -> None:
    """Namespace a reads namespace b's SSH banner through the bridge, or the network is no use."""
    probe = ("import socket, sys\n"
             "with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:\n"
             "    sys.stdout.write(s.recv(64).decode(errors='replace'))\n")
    server = hosts.servers[1]
    argv = netns_exec(hosts.namespaces[0], [sys.executable, "-I", "-S", "-c", probe,
                                            server.host, str(server.port), str(REACH_TIMEOUT_S)])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=REACH_TIMEOUT_S + 5)
    if not done.stdout.startswith("SSH-2.0"):
        why = (done.stderr.strip().splitlines() or [repr(done.stdout)])[-1]
        hint = ("bridged IPv4 goes through iptables here (bridge-nf-call-iptables=1): `iptables -S FORWARD` "
                "or `nft list ruleset` shows what drops it" if bridge_calls_iptables() else
                f"`bridge link show` shows whether a port of {hosts.bridge} is down or isolated")
        raise NetnsError(f"{hosts.namespaces[0]} cannot reach {server.host}:{server.port} in {hosts.namespaces[1]} "
                         f"through bridge {hosts.bridge}: {why}; {hint}")


@contextlib.contextmanager
def netns_hosts(directory: Path) -> Iterator[NetnsHosts]:
    """Build the two-namespace network with one sshd in each (keys and logs under directory); yield it."""
    directory = Path(directory)
    with contextlib.ExitStack() as stack:
        with open(LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held until our subnet is on our bridge, so no other run picks it
            subnet = choose_subnet(networks_in_use(), random.Random())
            token = choose_token()
            first, second, third = (str(subnet.network_address + n) for n in (1, 2, 3))
            hosts = NetnsHosts(subnet=subnet, bridge=f"offbr{token}", bridge_address=first,
                               namespaces=(f"offns{token}a", f"offns{token}b"), addresses=(second, third))
            if forward_rule_needed(bridge_calls_iptables(), read_forward_chain()):
                hosts.forward_rule = ["FORWARD", "-i", hosts.bridge, "-o", hosts.bridge, "-j", "ACCEPT"]
                iptables("-I", *hosts.forward_rule)
                stack.callback(iptables, "-D", *hosts.forward_rule)
            ip("link", "add", hosts.bridge, "type", "bridge")
            stack.callback(ip, "link", "del", hosts.bridge)
            ip("addr", "add", f"{first}/{subnet.prefixlen}", "dev", hosts.bridge)
            ip("link", "set", hosts.bridge, "up")
        for namespace, veth, address in zip(hosts.namespaces, hosts.veths, hosts.addresses):
            add_namespace(stack, hosts, namespace, veth, address)
        for namespace, address in zip(hosts.namespaces, hosts.addresses):
            server = SshServer(directory / namespace, host=address, port=SSH_PORT, netns=namespace)
            hosts.servers.append(server)
            stack.callback(server.stop)
            server.start()  # waits for the banner on address, read from the test's namespace through the bridge
        check_reach(hosts)
        yield hosts


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[NetnsHosts]:
    """Two sshd hosts, each in its own network namespace on a private bridge; see netns_hosts()."""
    with netns_hosts(tmp_path / "netns_hosts") as hosts:
        yield hosts
