"""When the host cannot be reached, the same command runs locally, saying so; other failures never fall back."""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CLI_TIMEOUT_S, register_host, run_offload, start_offload
from netns_hosts import ip, netns_exec
from pipe_reads import read_line_within, read_rest_within
from sshd_server import closed_port, kill_and_wait, read_proc, wait_for

NO_ROUTE_HOST = "192.0.2.1"  # TEST-NET-1, given an `unreachable` route: connect() fails with EHOSTUNREACH
NO_NETWORK_HOST = "198.51.100.1"  # TEST-NET-2, no route at all: ENETUNREACH


def local_runs(project: Path) -> list:
    runs = project / ".offload" / "runs"
    return sorted(p for p in runs.iterdir() if (p / "job").is_dir()) if runs.exists() else []


def fallback_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "running locally" in line]


def test_closed_port_falls_back_to_a_local_run(offload_home, sshd, project):
    register_host(offload_home, sshd, port=closed_port())
    result = run_offload("run", "report.py", "x", cwd=project)
    assert result.returncode == 0, result.stderr
    (line,) = fallback_lines(result.stderr)
    assert "box" in line and "unreachable" in line and "connection refused" in line and "CPU" in line
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["argv"] == ["x"]
    assert report["cwd"] == str(project)  # a local run works in the project itself
    (record,) = local_runs(project)
    meta = json.loads((record / "meta.json").read_text())
    assert meta["fallback"] is True and meta["host"] == "local" and meta["exit_code"] == 0


def test_a_host_that_never_sends_a_banner_falls_back_within_the_timeout(offload_home, sshd, silent_listener, project):
    register_host(offload_home, sshd, port=silent_listener.port)
    proc = start_offload("run", "--connect-timeout", "2", "report.py", cwd=project)
    try:
        # timed from the connection the silent host accepted: Python's start-up on a busy machine is not counted
        assert wait_for(lambda: silent_listener.accepted or proc.poll() is not None, 60), "offload never connected"
        connected = time.monotonic()
        line = ""
        while "running locally" not in line:
            line = read_line_within(proc.stderr).decode()
            assert line, "offload ended without falling back"
        gave_up = time.monotonic()
        report = json.loads(read_rest_within(proc.stdout).decode().splitlines()[-1])
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "banner" in line and report["argv"] == []
    assert len(silent_listener.accepted) == 1  # it really connected and waited for the banner
    assert 1.5 <= gave_up - connected < 2 + 3, gave_up - connected  # the --connect-timeout, not the default 10 s


def test_a_slow_connection_says_where_it_connects_after_one_second(offload_home, sshd, project):
    """A plain TCP socket of the test's own: the kernel answers the connect, nobody ever says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(60)
        port = listener.getsockname()[1]
        register_host(offload_home, sshd, port=port)
        proc = start_offload("run", "--no-fallback", "--connect-timeout", "4", "report.py", cwd=project)
        try:
            accepted, _ = listener.accept()  # when offload's connect arrived
            connected = time.monotonic()
            with accepted:
                line = read_line_within(proc.stderr).decode()
                said_at = time.monotonic()
                rest = read_rest_within(proc.stderr).decode()
                assert proc.wait(timeout=60) == 255
        finally:
            proc.kill()
            proc.wait(timeout=10)
    address = f"{sshd.user}@127.0.0.1:{port}"
    assert line == f"offload: connecting to box ({address})...\n"
    # the second counts from before the TCP connect, which the test sees a little later: not at once, not at the end
    assert 0.6 <= said_at - connected < 3, said_at - connected
    assert f"host box ({address}) is unreachable: it accepted the TCP connection but never spoke SSH " \
           "(no SSH banner within 4 s)" in rest
    assert f"something other than sshd may listen on port {port}" in rest
    assert rest.count("connecting to") == 0  # said once


def test_a_quick_connection_says_nothing_of_connecting(offload_home, sshd, project):
    register_host(offload_home, sshd)
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "connecting to" not in result.stderr


def test_an_unresolvable_name_falls_back(offload_home, sshd, project):
    register_host(offload_home, sshd, hostname="no-such-host.invalid")
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 0
    assert "name not resolved" in fallback_lines(result.stderr)[0]


def test_no_fallback_makes_it_an_error(offload_home, sshd, project):
    register_host(offload_home, sshd, port=closed_port())
    result = run_offload("run", "--no-fallback", "report.py", cwd=project)
    assert result.returncode == 255
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unreachable" in lines[0] and "Traceback" not in result.stderr
    assert local_runs(project) == []


def test_no_host_registered_runs_locally(offload_home, project):
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 0
    assert "no host registered" in result.stderr and "locally" in result.stderr
    assert len(local_runs(project)) == 1


def test_authentication_failure_is_an_error_not_a_fallback(offload_home, sshd, project, tmp_path):
    from sshd_server import generate_keypair

    stranger = tmp_path / "stranger_key"
    generate_keypair(stranger)
    register_host(offload_home, sshd, identity_file=str(stranger))
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode == 255
    assert "authentication" in result.stderr and "Traceback" not in result.stderr
    assert fallback_lines(result.stderr) == [] and local_runs(project) == []


def test_explicit_host_that_is_not_registered_is_an_error(offload_home, project):
    result = run_offload("run", "--host", "nope", "report.py", cwd=project)
    assert result.returncode == 1
    assert "unknown host 'nope'" in result.stderr
    assert local_runs(project) == []


@pytest.fixture
def routeless_namespace():
    """A network namespace of this test's own, with loopback only and an `unreachable` route to NO_ROUTE_HOST:
    what a laptop off the box's network sees. Whatever still runs in it is killed by pid before it is deleted."""
    name = f"offnr{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "route", "add", "unreachable", f"{NO_ROUTE_HOST}/32")
        yield name
    finally:
        left = [read_proc(int(pid)) for pid in ip("netns", "pids", name).split()]
        kill_and_wait([proc for proc in left if proc is not None and proc.state != "Z"])
        ip("netns", "del", name)


@pytest.mark.parametrize("address, reason", [(NO_ROUTE_HOST, "no route to host"),
                                             (NO_NETWORK_HOST, "network is unreachable")])
def test_no_route_to_the_host_falls_back(offload_home, sshd, project, routeless_namespace, address, reason):
    """EHOSTUNREACH and ENETUNREACH, produced for real by the namespace's routes, mean unreachable: a local run."""
    register_host(offload_home, sshd, hostname=address)
    argv = netns_exec(routeless_namespace, [sys.executable, "-m", "offload", "run", "report.py", "x"])
    done = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=os.environ)
    assert done.returncode == 0, done.stderr
    (line,) = fallback_lines(done.stderr)
    assert f"box ({sshd.user}@{address}:{sshd.port}) is unreachable ({reason})" in line and "CPU" in line, line
    assert json.loads(done.stdout.splitlines()[-1])["argv"] == ["x"]
    assert len(local_runs(project)) == 1
