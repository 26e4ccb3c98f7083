"""`offload run --host a --host b`: one torchrun job across two registered hosts, each a real sshd in its own
Linux network namespace with its own 10.x address (tests/netns_hosts.py), as separate machines would be:
the training itself, the failure of one node, and the run record, logs, status, stop and fetch.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from conftest import register_host, run_offload
from netns_hosts import ip, two_hosts  # noqa: F401  (the fixture)
from offload.runs.launch import plan_node_launch
from sshd_server import is_sshd, read_proc, wait_for

TESTS_DIR = Path(__file__).resolve().parent
DDP_SCRIPT = (TESTS_DIR / "data" / "ddp_tiny.py").read_text()
WRITES_FILE = """\
import os, sys, time
os.makedirs("out", exist_ok=True)
with open("out/node.txt", "w") as f:
    f.write(os.environ["NODE_NAME"] + "\\n")
print("wrote out/node.txt on", os.environ["NODE_NAME"], flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def register_both(offload_home, hosts, **env_b) -> list:
    """Hosts a and b, one per namespace; gloo goes over the namespaces' own interface."""
    return [register_host(offload_home, server, name, env={"GLOO_SOCKET_IFNAME": hosts.iface, "NODE_NAME": name,
                                                           **(env_b if name == "b" else {})})
            for name, server in zip(("a", "b"), hosts.servers)]


@pytest.fixture
def two_boxes(offload_home, two_hosts):
    register_both(offload_home, two_hosts)
    return two_hosts


def project_with(tmp_path: Path, name: str, text: str) -> Path:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / name).write_text(text)
    return root


def only_meta(project: Path) -> dict:
    (path,) = (project / ".offload" / "runs").glob("*/meta.json")
    return json.loads(path.read_text())


def test_each_node_gets_torchrun_with_c10d_rendezvous_at_node_0():
    argv = plan_node_launch("/venv/bin/python", "train.py", ["--x=1"], 2, 3, 1, "10.0.0.2:29400", "RUN1", "10.0.0.3")
    assert argv == ["/venv/bin/python", "-m", "torch.distributed.run", "--nnodes=3", "--node_rank=1",
                    "--nproc_per_node=2", "--rdzv_backend=c10d", "--rdzv_endpoint=10.0.0.2:29400", "--rdzv_id=RUN1",
                    "--rdzv_conf=is_host=0", "--local_addr=10.0.0.3", "--", "train.py", "--x=1"]
    assert "--rdzv_conf=is_host=1" in plan_node_launch("python", "t.py", [], 1, 2, 0, "h:1", "R", "h")


def test_the_rendezvous_is_at_rdzv_host_when_hosts_yaml_gives_one():
    from offload.config.resolve import resolve
    from offload.runs.launch import node_address

    plain = resolve("a", {"hostname": "gpu-a.lan"})
    homed = resolve("a", {"hostname": "gpu-a.lan", "rdzv_host": "10.9.0.5"})
    assert node_address(plain) == "gpu-a.lan"  # as the laptop reaches it
    assert node_address(homed) == "10.9.0.5"  # a multi-homed box: its cluster address


def trained_params(stdout: str) -> list:
    (line,) = [line for line in stdout.splitlines() if "params [" in line]  # "[node0 a] params [...]" or bare
    return ast.literal_eval(line.split("params ", 1)[1])


def test_two_nodes_of_one_process_train_exactly_as_one_node_of_two(two_boxes, tmp_path):
    project = project_with(tmp_path, "ddp_tiny.py", DDP_SCRIPT)
    result = run_offload("run", "--host", "a", "--host", "b", "ddp_tiny.py", cwd=project)
    assert result.returncode == 0, result.stderr + result.stdout
    single = run_offload("run", "--host", "a", "--nproc-per-node", "2", "ddp_tiny.py", cwd=project)
    assert single.returncode == 0, single.stderr + single.stdout
    assert trained_params(result.stdout) == trained_params(single.stdout)  # bit for bit: same sums, same order

    lines = result.stdout.splitlines()
    assert {line.split("] ")[0] + "]" for line in lines if line.startswith("[node")} == {"[node0 a]", "[node1 b]"}
    assert sum(" of 2 done" in line for line in lines) == 2
    meta = sorted((json.loads(path.read_text()) for path in (project / ".offload" / "runs").glob("*/meta.json")),
                  key=lambda meta: meta["started_unix"])[0]
    assert [node["host"] for node in meta["nodes"]] == ["a", "b"]
    assert meta["nodes"][1]["argv"][3:6] == ["--nnodes=2", "--node_rank=1", "--nproc_per_node=1"]
    assert meta["rdzv_endpoint"].startswith(f"{two_boxes.addresses[0]}:")  # node 0's address, as b reaches it
    assert meta["exit_code"] == 0 and meta["node_exits"] == [0, 0]
    assert meta["device"].startswith("2 x ")  # the peak is both nodes' devices
    run_dir = project / ".offload" / "runs" / meta["run_id"]
    assert (run_dir / "output.log").read_text() == result.stdout  # the combined log is what was shown
    assert " of 2 done" in (run_dir / "node1" / "output.log").read_text()


def test_the_first_node_to_fail_is_named_and_the_others_are_stopped_within_seconds(offload_home, two_hosts, tmp_path):
    register_both(offload_home, two_hosts, FAIL_HERE="1")
    project = project_with(tmp_path, "ddp_tiny.py", DDP_SCRIPT)
    result = run_offload("run", "--host", "a", "--host", "b", "ddp_tiny.py", cwd=project)
    assert result.returncode == 1, result.stderr  # torchrun's own exit code when its worker fails
    assert "offload: node1 b (" in result.stderr, result.stderr
    assert "failed with exit code 1; the other nodes were stopped" in result.stderr
    assert "[node1 b] this node fails on purpose" in result.stdout
    meta = only_meta(project)
    # timed on the hosts, from b's end to a's, so neither Python's nor torchrun's start-up is counted
    ended_a, ended_b = (json.loads((Path(node["run_dir"]) / "status.json").read_text())["ended_at"]
                        for node in meta["nodes"])
    assert ended_a - ended_b < 30, f"node a went on {ended_a - ended_b:.0f} s after b failed instead of being stopped"
    assert meta["failed_host"] == "b" and meta["node_exits"][1] == 1 and meta["node_exits"][0] != 0
    status = run_offload("status", "last", cwd=project)
    assert "running" not in status.stdout and "waiting" not in status.stdout, status.stdout


def test_status_logs_fetch_and_stop_reach_every_node(two_boxes, tmp_path):
    project = project_with(tmp_path, "writes.py", WRITES_FILE)
    started = run_offload("run", "--detach", "--host", "a", "--host", "b", "writes.py", "600", cwd=project)
    assert started.returncode == 0, started.stderr
    meta = only_meta(project)
    host_dirs = [Path(node["project_dir"]) for node in meta["nodes"]]
    assert wait_for(lambda: all((d / "out" / "node.txt").exists() for d in host_dirs), 60)

    status = run_offload("status", "last", cwd=project)
    assert status.returncode == 0, status.stderr
    assert f"{meta['run_id']} on node0 a: running" in status.stdout and "on node1 b: running" in status.stdout

    logs = run_offload("logs", "last", cwd=project)
    assert "[node0 a] wrote out/node.txt on a" in logs.stdout and "[node1 b] wrote out/node.txt on b" in logs.stdout

    assert run_offload("fetch", "last", "--node", "1", cwd=project).returncode == 0
    fetched = project / ".offload" / "runs" / meta["run_id"] / "files" / "out" / "node.txt"
    assert fetched.read_text() == "b\n"
    assert run_offload("fetch", "last", "--node", "2", cwd=project).stderr.startswith(
        f"offload: error: run {meta['run_id']} has nodes 0 to 1, not 2")

    stopped = run_offload("stop", "last", "--grace", "2", cwd=project)
    followed = run_offload("logs", "last", "-f", cwd=project)  # ends with the run, on every node
    assert followed.returncode == 0 and followed.stdout.count("wrote out/node.txt") == 2, followed.stderr
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stderr.count("process group") == 2  # one SIGTERM line per node
    after = run_offload("status", "last", cwd=project)
    assert "running" not in after.stdout and after.stdout.count(": exited ") + after.stdout.count(": killed by ") == 2
    assert only_meta(project)["exit_code"] is not None  # the record has the run's end


def test_each_nodes_setup_runs_with_its_output_prefixed_then_is_skipped(offload_home, two_hosts, tmp_path):
    for name, server in zip(("a", "b"), two_hosts.servers):
        register_host(offload_home, server, name, env={"GLOO_SOCKET_IFNAME": two_hosts.iface, "NODE_NAME": name},
                      setup='echo "setting up $NODE_NAME"; echo ran >> setup-ran.txt')
    project = project_with(tmp_path, "writes.py", WRITES_FILE)
    (project / "requirements.txt").write_text("numpy\n")
    first = run_offload("run", "--host", "a", "--host", "b", "writes.py", cwd=project)
    assert first.returncode == 0, first.stderr
    assert "[node0 a] setting up a" in first.stdout and "[node1 b] setting up b" in first.stdout
    second = run_offload("run", "--host", "a", "--host", "b", "writes.py", cwd=project)
    assert second.returncode == 0, second.stderr
    assert "setting up" not in second.stdout
    assert "setup on a skipped" in second.stderr and "setup on b skipped" in second.stderr
    for node in only_meta_of_first(project)["nodes"]:
        assert (Path(node["project_dir"]) / "setup-ran.txt").read_text() == "ran\n"


def only_meta_of_first(project: Path) -> dict:
    metas = [json.loads(path.read_text()) for path in (project / ".offload" / "runs").glob("*/meta.json")]
    return min(metas, key=lambda meta: meta["started_unix"])


def test_errors_before_anything_starts(two_boxes, tmp_path, offload_home):
    project = project_with(tmp_path, "ddp_tiny.py", DDP_SCRIPT)
    twice = run_offload("run", "--host", "a", "--host", "a", "ddp_tiny.py", cwd=project)
    assert twice.returncode == 1 and twice.stderr.startswith("offload: error: a host is named twice")
    unknown = run_offload("run", "--host", "a", "--host", "nosuch", "ddp_tiny.py", cwd=project)
    assert unknown.returncode == 1 and "unknown host 'nosuch'" in unknown.stderr
    resumed = run_offload("run", "--host", "a", "--host", "b", "--resume", "last", cwd=project)
    assert resumed.returncode == 1 and "--resume works with one host" in resumed.stderr
    for result in (twice, unknown, resumed):
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (project / ".offload" / "runs").exists()


def test_two_registrations_of_one_host_account_are_refused_before_anything_starts(two_boxes, tmp_path, offload_home):
    """One account has one GPU lock: its two nodes would each wait for the other's job."""
    hosts_file = offload_home.path / "hosts.yaml"
    registry = yaml.safe_load(hosts_file.read_text())
    registry["hosts"]["a-again"] = dict(registry["hosts"]["a"])
    hosts_file.write_text(yaml.safe_dump(registry))
    project = project_with(tmp_path, "writes.py", WRITES_FILE)
    result = run_offload("run", "--host", "a", "--host", "a-again", "writes.py", "600", cwd=project)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("offload: error: hosts a and a-again are one host account"), result.stderr
    assert len(result.stderr.splitlines()) <= 2 and "Traceback" not in result.stderr  # the line and its hint
    workdir_a = Path(registry["hosts"]["a"]["workdir"])
    assert not list(workdir_a.glob("proj-*")) and not (project / ".offload" / "runs").exists()


def non_sshd_processes(namespace: str) -> list:
    """What runs in a host's namespace besides its sshd and the sessions it serves: an agent, a job."""
    procs = [read_proc(int(pid)) for pid in ip("netns", "pids", namespace).split()]
    return [f"{proc.pid} {proc.comm}" for proc in procs if proc is not None and proc.state != "Z" and not is_sshd(proc)]


def test_an_unreachable_node_fails_the_run_before_anything_starts_on_the_reachable_one(two_boxes, tmp_path,
                                                                                        offload_home):
    two_boxes.servers[1].stop()  # b's address is up, nothing listens on its SSH port: refused
    project = project_with(tmp_path, "writes.py", WRITES_FILE)
    result = run_offload("run", "--host", "a", "--host", "b", "--connect-timeout", "5", "writes.py", "600",
                         cwd=project)
    workdir_a = Path(yaml.safe_load((offload_home.path / "hosts.yaml").read_text())["hosts"]["a"]["workdir"])
    assert not list(workdir_a.glob("proj-*")), "the project was synced to a, for a run that cannot happen"
    # a ran an agent for the connection check; once the laptop's links are gone (the link keeper kept a's), only
    # sshd is left there
    assert run_offload("hosts", "disconnect").returncode == 0
    assert wait_for(lambda: not non_sshd_processes(two_boxes.namespaces[0]), 15), \
        non_sshd_processes(two_boxes.namespaces[0])
    assert not (project / ".offload" / "runs").exists()
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    b = two_boxes.servers[1]
    assert result.stderr.startswith(f"offload: error: host b ({b.user}@{b.host}:{b.port}) is unreachable: "
                                    "connection refused"), result.stderr
    assert "a multi-node run needs every host" in result.stderr
