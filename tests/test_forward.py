"""Ports (issue 15, point 1), through the real CLI, a real sshd and real sockets: `offload run --forward` carries
HTTP to a server the job starts on the host, before and after the sshd serving the link is killed; `offload
forward` does it alone until Ctrl-C, and outlives a host port that is not up yet; a local port in use is one
line naming its holder; nothing listens beyond loopback unless --bind says so."""
from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import register_host, run_offload, start_offload
from pipe_reads import read_line_within, read_rest_within
from sshd_server import closed_port, free_port, wait_for
from test_run import run_records

from offload.config.ports import PortForward, merged, parse_forward

# The job: an HTTP server on the host's loopback that answers who it is, and ends the job at /quit.
SERVE = """\
import http.server, os, sys, threading
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"host says {self.path} to run {os.environ['OFFLOAD_RUN_ID']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/quit":
            threading.Thread(target=server.shutdown).start()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("serving", flush=True)
server.serve_forever()
"""


def get(port: int, path: str) -> tuple:
    """(status, body) of GET path on 127.0.0.1:port: http.client, so no proxy setting is consulted."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def get_within(port: int, path: str, seconds: float = 30) -> tuple:
    """GET, retried while the forward is not through yet (its link reconnecting, the server starting)."""
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            return get(port, path)
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"no answer through port {port} within {seconds} s: {last!r}")


def listening_addresses(port: int) -> set:
    """The local addresses something listens on at port, from /proc/net/tcp (hex, as the kernel writes them)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if fields[3] == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_a_run_s_port_carries_http_before_and_after_the_sshd_serving_the_link_is_killed(offload_home, fresh_sshd, project):
    register_host(offload_home, fresh_sshd)
    (project / "serve.py").write_text(SERVE)
    local, remote = free_port(), free_port()
    proc = start_offload("run", "--forward", f"{local}:{remote}", "serve.py", str(remote), cwd=project)
    try:
        assert read_line_within(proc.stdout) == b"serving\n"
        status, body = get_within(local, "/before")
        run_id = run_records(project)[-1].name
        assert (status, body) == (200, f"host says /before to run {run_id}")
        assert listening_addresses(local) == {"127.0.0.1"}  # loopback only: no --bind
        assert fresh_sshd.kill_connections()  # the link drops; the follow reconnects, the port stays bound
        assert get_within(local, "/after") == (200, f"host says /after to run {run_id}")
        assert get(local, "/quit")[0] == 200
        assert proc.wait(timeout=60) == 0
        stderr = read_rest_within(proc.stderr).decode()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert f"forwarding http://127.0.0.1:{local} to box's port {remote}" in stderr, stderr
    assert "reconnected to box" in stderr, stderr
    assert wait_for(lambda: not listening_addresses(local), 10)  # the forward ended with the run


def test_offload_forward_waits_for_the_host_s_server_rides_out_a_dropped_link_and_stops_at_ctrl_c(
        offload_home, fresh_sshd, project, tmp_path):
    register_host(offload_home, fresh_sshd)
    local, remote = free_port(), free_port()
    proc = start_offload("forward", "box", f"{local}:{remote}", "--bind", "127.0.0.1", cwd=project)
    server = None
    try:
        said = [read_line_within(proc.stderr) for _ in range(2)]
        assert said[-1] == b"offload: forwarding until Ctrl-C\n", said
        assert listening_addresses(local) == {"127.0.0.1"}
        # Nothing listens on the host's port yet: the connection is refused, and the forward lives on.
        try:
            get(local, "/early")
            raise AssertionError("a connection to a host port nobody listens on got an answer")
        except (OSError, http.client.HTTPException):
            pass
        (tmp_path / "serve.py").write_text(SERVE.replace("os.environ['OFFLOAD_RUN_ID']", "'none'"))
        server = subprocess.Popen([sys.executable, str(tmp_path / "serve.py"), str(remote)], stdout=subprocess.PIPE)
        assert read_line_within(server.stdout) == b"serving\n"  # "on the host": the test's host is this machine
        assert get_within(local, "/late") == (200, "host says /late to run none")
        assert fresh_sshd.kill_connections()  # the forward's own watch reconnects; the port stays bound meanwhile
        assert get_within(local, "/again") == (200, "host says /again to run none")
        while not said[-1].startswith(b"offload: reconnected to box after"):
            said.append(read_line_within(proc.stderr))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        stderr = b"".join(said).decode() + read_rest_within(proc.stderr).decode()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if server is not None:
            server.kill()
            server.wait(timeout=10)
    assert f"port {local}: box refused the connection to its 127.0.0.1:{remote}" in stderr, stderr
    assert "lost the link to box (the connection closed); reconnecting" in stderr, stderr
    assert "stopped forwarding" in stderr and "Traceback" not in stderr, stderr
    assert wait_for(lambda: not listening_addresses(local), 10)


def test_a_local_port_in_use_is_one_line_naming_its_holder_and_nothing_runs(offload_home, sshd, project):
    register_host(offload_home, sshd)
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", "import socket, sys, time\n"
                               f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
                               "print('listening', flush=True); time.sleep(120)\n"], stdout=subprocess.PIPE)
    try:
        assert read_line_within(holder.stdout) == b"listening\n"
        (project / "never.py").write_text("open('ran', 'w').close()\n")
        for args in (["forward", "box", str(port)], ["run", "--forward", str(port), "never.py"]):
            result = run_offload(*args, cwd=project)
            assert result.returncode != 0
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith(f"offload: error: local port {port} is in use by "), result.stderr
            assert f"(pid {holder.pid})" in lines[0] and "Traceback" not in result.stderr, result.stderr
        assert not (project / ".offload" / "runs").exists()  # the run never started: the port was checked first
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_bind_opens_the_port_beyond_loopback_only_when_asked(offload_home, sshd, project):
    register_host(offload_home, sshd)
    port = free_port()
    proc = start_offload("forward", "box", str(port), "--bind", "0.0.0.0", cwd=project)
    try:
        said = [read_line_within(proc.stderr) for _ in range(2)]
        assert said == [f"offload: forwarding http://0.0.0.0:{port} to box's port {port}\n".encode(),
                        b"offload: forwarding until Ctrl-C\n"], said
        assert listening_addresses(port) == {"0.0.0.0"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_run_that_falls_back_to_this_machine_keeps_its_ports_to_itself(offload_home, sshd, project):
    """The job listens here itself: a forward holding its port would take it from the job."""
    register_host(offload_home, sshd, port=closed_port())
    port = free_port()
    (project / "listen.py").write_text("import socket, sys\ns = socket.socket()\n"
                                       f"s.bind(('127.0.0.1', {port})); s.listen(); print('bound')\n")
    result = run_offload("run", "--forward", f"{port}", "listen.py", cwd=project)
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "bound", result.stderr
    assert f"port {port}: the run is on this machine; its own port is http://127.0.0.1:{port}" in result.stderr


def test_bad_ports_and_a_forward_with_detach_are_one_line_errors(offload_home, sshd, project):
    register_host(offload_home, sshd)
    for args, said in ((["run", "--forward", "tensorboard", "report.py"], "--forward 'tensorboard' is not a port"),
                       (["run", "--forward", "0", "report.py"], "--forward '0' is not a port"),
                       (["forward", "box", "1:2:3"], "port '1:2:3' is not a port"),
                       (["forward", "box", "80", "--bind", "no.such.address.invalid"], "--bind no.such.address.invalid"),
                       (["run", "--detach", "--forward", "6006", "report.py"], "--detach does not follow it")):
        result = run_offload(*args, cwd=project)
        assert result.returncode != 0 and said in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    (project / "offload.yaml").write_text("ports: [6006, 70000]\n")
    result = run_offload("run", "report.py", cwd=project)
    assert result.returncode != 0 and "offload.yaml:1: ports: '70000' is not a port" in result.stderr, result.stderr
    assert not (project / ".offload" / "runs").exists()


def test_port_specs_and_the_command_line_winning_over_offload_yaml():
    assert parse_forward("6006") == PortForward(6006, 6006)
    assert parse_forward(8888) == PortForward(8888, 8888)
    assert parse_forward(" 8888:8889 ") == PortForward(8888, 8889)
    given, configured = [PortForward(6006, 7007)], (PortForward(6006, 6006), PortForward(8888, 8888))
    assert merged(given, configured) == [PortForward(6006, 7007), PortForward(8888, 8888)]
