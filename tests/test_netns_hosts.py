"""The two-host fixture: two real sshds, each in its own network namespace, that torch.distributed can span."""

from __future__ import annotations

import base64
import ipaddress
import os
import signal
import subprocess
import sys

import paramiko

from conftest import register_host, run_offload
from netns_hosts import IFACE, forward_rule_needed, ip, netns_exec, netns_hosts, two_hosts  # noqa: F401
from pipe_reads import read_line_within
from sshd_server import SshServer, descendants, read_banner, read_proc, still_running, wait_for

TEN_SLASH_8 = ipaddress.IPv4Network("10.0.0.0/8")
PROCESS_DEADLINE_S = 60.0  # a gloo rank: torch import plus rendezvous, on a busy 2-core machine


def stop(process: subprocess.Popen) -> None:
    """SIGTERM by pid, SIGKILL after 5 s; reaped either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def network_namespace(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def link_names() -> set[str]:
    """Interface names of the test's namespace, as `ip -o link show` lists them ("5: offv1a2ba@if2: <...")."""
    return {line.split()[1].split("@")[0].rstrip(":") for line in ip("-o", "link", "show").splitlines()}


def connect(server: SshServer) -> paramiko.SSHClient:
    key_type, key_base64 = server.host_public_key.split()[:2]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(f"[{server.host}]:{server.port}", key_type,
                               paramiko.PKey.from_type_string(key_type, base64.b64decode(key_base64)))
    client.connect(server.host, port=server.port, username=server.user, key_filename=str(server.client_key_path),
                   look_for_keys=False, allow_agent=False, timeout=5, banner_timeout=5, auth_timeout=5)
    return client


def test_each_sshd_runs_in_its_namespace_and_answers_on_its_address(two_hosts):
    assert two_hosts.addresses == (str(two_hosts.subnet[2]), str(two_hosts.subnet[3]))
    assert two_hosts.subnet.subnet_of(TEN_SLASH_8) and two_hosts.subnet.prefixlen == 24
    ours = network_namespace(os.getpid())
    for server, namespace, address in zip(two_hosts.servers, two_hosts.namespaces, two_hosts.addresses):
        assert (server.host, server.netns) == (address, namespace)
        assert read_proc(server.pid).comm == "sshd"  # `ip netns exec` exec'd: the pid we hold is sshd's
        assert network_namespace(server.pid) == os.stat(f"/run/netns/{namespace}").st_ino != ours
        assert read_banner(address, server.port, timeout_s=5).startswith(b"SSH-2.0-OpenSSH")
        assert f"inet {address}/24" in ip("-n", namespace, "-4", "addr", "show", "dev", IFACE)
        assert "UP" in ip("-n", namespace, "link", "show", "lo").split(">")[0]
    # the test's namespace reaches both through the bridge, which holds the subnet's .1
    assert f"inet {two_hosts.bridge_address}/24" in ip("-4", "addr", "show", "dev", two_hosts.bridge)


def test_offload_hosts_check_passes_on_both_hosts(two_hosts, offload_home):
    for name, server in zip("ab", two_hosts.servers):
        register_host(offload_home, server, name=name, env={"GLOO_SOCKET_IFNAME": two_hosts.iface})
    for name, server in zip("ab", two_hosts.servers):
        result = run_offload("hosts", "check", name, timeout=60)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert f"{name} ({server.user}@{server.host}:{server.port})" in result.stdout, result.stdout
        assert "Traceback" not in result.stderr


LISTENER = """\
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
connection, peer = server.accept()
connection.sendall(f"hello {peer[0]}\\n".encode())
connection.close()
"""
CONNECTOR = """\
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as sock:
    print(sock.recv(100).decode().strip())
"""


def test_namespace_a_reaches_a_listener_in_namespace_b(two_hosts):
    (ns_a, ns_b), (address_a, address_b) = two_hosts.namespaces, two_hosts.addresses
    listener = subprocess.Popen(netns_exec(ns_b, [sys.executable, "-c", LISTENER, address_b, "7000"]),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert read_line_within(listener.stdout) == "listening\n"
        connector = subprocess.run(netns_exec(ns_a, [sys.executable, "-c", CONNECTOR, address_b, "7000"]),
                                   capture_output=True, text=True, timeout=20)
        assert connector.stdout == f"hello {address_a}\n", connector.stderr
        assert listener.wait(timeout=10) == 0
    finally:
        stop(listener)


GLOO_ALL_REDUCE = """\
import datetime, sys, torch, torch.distributed as dist
rank = int(sys.argv[2])
dist.init_process_group("gloo", init_method=sys.argv[1], rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=30))
tensor = torch.tensor([rank + 1.0, 10.0 * (rank + 1)])
dist.all_reduce(tensor)
print("sum", tensor.tolist(), flush=True)
dist.destroy_process_group()
"""


def test_gloo_all_reduce_spans_the_two_namespaces(two_hosts):
    init_method = f"tcp://{two_hosts.addresses[0]}:29500"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": two_hosts.iface}
    ranks = [subprocess.Popen(netns_exec(namespace, [sys.executable, "-c", GLOO_ALL_REDUCE, init_method, str(rank)]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for rank, namespace in enumerate(two_hosts.namespaces)]
    try:
        outputs = [rank.communicate(timeout=PROCESS_DEADLINE_S) for rank in ranks]
    finally:
        for rank in ranks:
            stop(rank)
    for rank, (stdout, stderr) in zip(ranks, outputs):
        assert (rank.returncode, stdout) == (0, "sum [3.0, 30.0]\n"), stderr[-2000:]


def test_teardown_leaves_no_namespace_link_or_process(tmp_path):
    with netns_hosts(tmp_path) as hosts:
        names = [hosts.bridge, *hosts.veths]
        assert set(names) <= link_names()
        assert all(namespace in ip("netns", "list") for namespace in hosts.namespaces)
        client = connect(hosts.servers[1])
        try:
            client.exec_command("sleep 300")  # a session's command: a descendant of sshd b
            sshd_b = hosts.servers[1].pid
            assert wait_for(lambda: any(proc.comm == "sleep" for proc in descendants(sshd_b)), 10)
            # a job that left sshd's tree, as a daemonized one would: found only by its namespace
            stray = subprocess.Popen(netns_exec(hosts.namespaces[0], ["sleep", "300"]))
            namespace_a = os.stat(f"/run/netns/{hosts.namespaces[0]}").st_ino
            assert wait_for(lambda: network_namespace(stray.pid) == namespace_a, 10)
            watched = [read_proc(server.pid) for server in hosts.servers] + descendants(sshd_b) + [read_proc(stray.pid)]
            assert None not in watched and len(watched) >= 5  # 2 listeners, b's session sshd, its shell or sleep, stray
        finally:
            client.close()
    try:
        assert stray.pid in hosts.stray_pids
        assert not [proc for proc in watched if still_running(proc)]
        namespaces = ip("netns", "list")
        assert not [namespace for namespace in hosts.namespaces if namespace in namespaces]
        assert not set(names) & link_names()
        if hosts.forward_rule is not None:
            rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, timeout=10).stdout
            assert hosts.bridge not in rules
    finally:
        stop(stray)


def test_forward_rule_only_where_bridged_frames_meet_a_forward_chain_that_may_drop():
    docker = ["-P FORWARD DROP", "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD"]
    assert forward_rule_needed(True, docker)
    assert not forward_rule_needed(False, docker)  # no br_netfilter: bridged frames skip iptables
    assert not forward_rule_needed(True, ["-P FORWARD ACCEPT"])
    assert not forward_rule_needed(True, None)  # no iptables here to read or change
