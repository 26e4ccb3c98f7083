"""The laptop's end of the agent: start it (over SSH, or as a local subprocess) and talk to it.

The remote agent is shipped by content hash to <workdir>/.agent/<hash>/ and started with the host's
Python over one exec channel; when that directory is already there, starting costs one round trip.
"""
from __future__ import annotations

import hashlib
import io
import shlex
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import remote_agent
from remote_agent import protocol

from offload.errors import LinkLost, OffloadError, RemoteError

AGENT_DIR = Path(remote_agent.__file__).resolve().parent
MISSING_MARK = "OFFLOAD_AGENT_MISSING"
REPLY_TIMEOUT_S = 60  # a request the agent answers at once; a link silent this long is dead
FACTS_TIMEOUT_S = 180  # facts import torch on the host
DISK_HINT = "free space there, or point workdir at a bigger disk in hosts.yaml"
INTERNAL_HINT = "a bug in offload's agent (it serves on): run it again; if it fails the same way, report this line"


def agent_files() -> list:
    """The agent's sources, the jobs' helper library (lib/) included, as paths relative to AGENT_DIR."""
    return sorted(p.relative_to(AGENT_DIR) for p in AGENT_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def agent_hash() -> str:
    digest = hashlib.sha256()
    for relative in agent_files():
        digest.update(relative.as_posix().encode() + b"\0" + (AGENT_DIR / relative).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def shell_path(path: str) -> str:
    """Quote a path for a POSIX shell, keeping a leading ~/ meaning the remote home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


class AgentClient:
    def __init__(self, reader, writer, label: str, set_timeout=None, close=None):
        self.reader, self.writer, self.label = reader, writer, label
        self._set_timeout = set_timeout or (lambda seconds: None)
        self._close = close or (lambda: None)
        self.noise = []
        self.hello = None
        # What this link has carried to the agent, and the time spent handing it over: once the link's buffers
        # are full, a write waits for the link, so their ratio is the rate the link takes bytes at (a sync's
        # compression is chosen by it, offload/sync/compress.py).
        self.written_bytes, self.write_seconds = 0, 0.0
        self.known_manifests = {}  # what the agent last described of each project (sync/known_manifest.py)

    def read_hello(self, timeout: float | None = REPLY_TIMEOUT_S) -> dict | None:
        self.hello = self._read(timeout, noise=self.noise.append)
        if self.hello is not None and self.hello["t"] != "hello":
            raise OffloadError(f"the agent on {self.label} did not greet: {self.hello}")
        return self.hello

    @property
    def codecs(self) -> list:
        """The codecs the agent decompresses, best first (its hello says; none from an agent that does not)."""
        return list((self.hello or {}).get("codecs") or [])

    def send(self, message_type: str, /, **fields) -> None:
        self.write(protocol.encode(message_type, **fields), flush=True)

    def write(self, data: bytes, flush: bool = False) -> None:
        """Raw bytes to the agent (a message, or the bulk data that follows one)."""
        started = time.perf_counter()
        try:
            self.writer.write(data)
            if flush:
                self.writer.flush()
        except OSError as exc:  # the agent or the link died: say so, not "Socket is closed" with a traceback
            raise LinkLost(self.label, str(exc) or type(exc).__name__) from None
        self.written_bytes += len(data)
        self.write_seconds += time.perf_counter() - started

    def _read(self, timeout: float | None, noise=None) -> dict | None:
        self._set_timeout(timeout)
        try:
            return protocol.read_message(self.reader, noise=noise)
        except socket.timeout:
            raise LinkLost(self.label, f"nothing heard for {timeout:.0f} s") from None
        except (OSError, EOFError, protocol.ProtocolError) as exc:
            raise LinkLost(self.label, str(exc) or type(exc).__name__) from None

    def recv(self, timeout: float | None = REPLY_TIMEOUT_S) -> dict:
        message = self._read(timeout)
        if message is None:
            raise LinkLost(self.label, "the agent went away")
        if message["t"] == "error":
            code = message.get("code", "")
            error = RemoteError(f"{self.label}: {message['message']}", code=code,
                                hint=INTERNAL_HINT if code == "internal" else None)
            error.detail = message["message"]  # the agent's own words, for callers that explain them
            raise error
        return message

    def request(self, message_type: str, /, timeout: float | None = REPLY_TIMEOUT_S, **fields) -> dict:
        self.send(message_type, **fields)
        return self.recv(timeout)

    def read_blob(self, size: int):
        return protocol.read_exactly(self.reader, size)

    def close(self) -> None:
        try:
            self.send("bye")
        except (OSError, EOFError, ValueError, OffloadError):  # ValueError: already closed
            pass
        self._close()


class ChannelWriter(io.RawIOBase):
    """A channel's stdin under io.BufferedWriter. Paramiko's own file retries its buffer when collected, so a
    dead link printed a traceback at exit after the one-line error; io's buffer is dropped quietly."""

    def __init__(self, channel):
        self.channel = channel

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.channel.sendall(bytes(data))
        return len(data)


def start_command(target) -> str:
    agent_dir = f"{target.workdir.rstrip('/')}/.agent/{agent_hash()}"
    script = (f"d={shell_path(agent_dir)}; "
              f'[ -f "$d/remote_agent/__main__.py" ] || {{ echo {MISSING_MARK}; exit 3; }}; '
              f'cd "$d" && exec {shell_path(target.python)} -m remote_agent')
    return "sh -c " + shlex.quote(script)


def install_command(target) -> str:
    agent_dir = f"{target.workdir.rstrip('/')}/.agent/{agent_hash()}"
    script = (f"d={shell_path(agent_dir)}; t=\"$d.part.$$\"; "
              'if mkdir -p "$t" && tar -xf - -C "$t"; then [ -d "$d" ] || mv "$t" "$d" 2>/dev/null; rm -rf "$t"; '
              'else rm -rf "$t"; exit 1; fi; '  # a half-extracted copy would only take up the space that ran out
              '[ -f "$d/remote_agent/__main__.py" ]')
    return "sh -c " + shlex.quote(script)


def agent_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for relative in agent_files():
            tar.add(str(AGENT_DIR / relative), arcname=f"remote_agent/{relative.as_posix()}")
    return buffer.getvalue()


def exec_channel(client, command: str):
    channel = client.get_transport().open_session()
    channel.exec_command(command)
    return channel


def install_remote(client, target) -> None:
    channel = exec_channel(client, install_command(target))
    try:
        channel.sendall(agent_tarball())
        channel.shutdown_write()
    except OSError:
        pass  # the install failed before reading it all (mkdir on a read-only disk): its stderr says why
    stderr = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
    if channel.recv_exit_status() != 0:
        # The last line that says what went wrong: a .bashrc may print before it, tar's summary after it.
        lines = [line for line in stderr.splitlines() if "Exiting with failure" not in line]
        detail = lines[-1] if lines else "failed"
        if "No space" in stderr:
            raise RemoteError(f"not enough disk on {target.name} to install the agent in {target.workdir}: {detail}",
                              code="disk_full", hint=DISK_HINT)
        raise RemoteError(f"cannot install the agent in {target.workdir} on {target.name}: {detail}",
                          code="not_writable", hint="set workdir for this host in hosts.yaml to a writable directory")


def start_remote(client, target) -> AgentClient:
    for attempt in range(2):
        channel = exec_channel(client, start_command(target))
        agent = AgentClient(channel.makefile("rb", 1 << 16), io.BufferedWriter(ChannelWriter(channel), 1 << 16),
                            label=target.name, set_timeout=channel.settimeout, close=channel.close)
        if agent.read_hello() is not None:
            return agent
        noise = b"".join(agent.noise).decode(errors="replace")
        status = channel.recv_exit_status()
        stderr = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
        if MISSING_MARK in noise and attempt == 0:
            install_remote(client, target)
            continue
        if status == 127:
            raise RemoteError(f"python not found on {target.name} at {target.python}",
                              hint=f"set python for {target.name} in hosts.yaml to the interpreter that has torch")
        last = stderr.splitlines()[-1] if stderr else f"exit status {status}"
        raise RemoteError(f"the agent could not start on {target.name} with {target.python}: {last}",
                          hint="offload needs Python 3.8 or newer on the host")
    raise RemoteError(f"the agent could not be installed on {target.name}")


def start_local() -> AgentClient:
    """The same agent as a local subprocess: the CPU fallback shares every line of the remote path."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "remote_agent"], cwd=str(AGENT_DIR.parent),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches offload, which decides what happens to the run
    )

    def close():
        for stream in (proc.stdin, proc.stdout):
            stream.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    agent = AgentClient(proc.stdout, proc.stdin, label="this machine", close=close)
    if agent.read_hello() is None:
        close()
        raise OffloadError("the local agent did not start")
    return agent
