"""One real agent (`python -m remote_agent`) fed one byte stream, in a sandbox of its own, and every property
it must keep whatever the stream held (issue 11, point 7): within DEADLINE_S of the stream's end it has exited,
its stdout held protocol messages only (every error one line with a code), its stderr no traceback, no process
it started is left, and nothing outside the project directory changed: the sandbox around the project is as it
was, to the byte and the mtime, and no put's bytes are in the project's own records (.offload/).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import alive, stop_by_pid

from remote_agent import protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 10.0  # from the stream's end to the agent's exit
PROJECT = "proj-0123abcd"
OTHER_PROJECT = "other-89abcdef"  # a second, well-named project the stream may prepare beside it
BLOB_REPLIES = ("blocks", "output", "metrics", "file_chunk")  # replies followed by `size` raw bytes
WELL_FRAMED_BYTES = b"the laptop's\n"  # what every well-framed put writes: never found in the agent's records


# --- the sandbox around one agent --------------------------------------------------------------------------

@dataclass
class Sandbox:
    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def project_dir(self) -> Path:
        return self.work / PROJECT

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    def make(self) -> None:
        """A project holding links out of it and into its own records, beside files that are not its own."""
        for directory in (self.home, self.project_dir / "sub", self.outside / "sub"):
            directory.mkdir(parents=True)
        (self.outside / "sentinel.txt").write_bytes(b"not offload's\n")
        (self.work / "neighbour.txt").write_bytes(b"another project's\n")
        (self.project_dir / "escape").symlink_to(self.outside)
        (self.project_dir / "escape_file").symlink_to(self.outside / "sentinel.txt")
        (self.project_dir / "up").symlink_to("..")
        (self.project_dir / ".offload").mkdir()
        (self.project_dir / "records").symlink_to(".offload")  # inside the project, yet no sync's to write
        (self.project_dir / "itself").symlink_to(".")
        (self.project_dir / "kept.txt").write_bytes(b"the host's own\n")

    def placeholders(self) -> dict:
        return {"{project_dir}": str(self.project_dir), "{work}": str(self.work), "{outside}": str(self.outside),
                "{python}": sys.executable}

    def around_the_projects(self, projects: set) -> dict:
        """relpath -> what it is, for everything in the sandbox but the insides of these project directories."""
        found = {}
        for directory, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(directory, self.root)
            if rel_dir == "work":
                dirnames[:] = [d for d in dirnames if d not in projects]
            for name in dirnames + filenames:
                path = os.path.join(directory, name)
                relpath = os.path.normpath(os.path.join(rel_dir, name))
                info = os.lstat(path)
                content = os.readlink(path) if os.path.islink(path) else (
                    hashlib.sha256(Path(path).read_bytes()).hexdigest() if os.path.isfile(path) else "")
                # the workdir's own mtime moves when a project directory is made in it: its entries say enough
                mtime = None if relpath == "work" else info.st_mtime_ns
                found[relpath] = (info.st_mode, info.st_size if content else 0, mtime, content)
        return found

    def planted_in_records(self, projects: set) -> list:
        """Files in the projects' own records (.offload/, but its staged trees) holding what a put wrote."""
        found = []
        for name in projects:
            records = self.work / name / ".offload"
            for path in records.rglob("*") if os.path.isdir(records) else ():  # isdir: False for a name too long
                if "stages" not in path.relative_to(records).parts and path.is_file() and not path.is_symlink() \
                        and path.read_bytes() == WELL_FRAMED_BYTES:
                    found.append(str(path.relative_to(self.work)))
        return found


def substituted(value, placeholders: dict):
    """A message's fields with each placeholder ({project_dir}, {outside}, ...) made this sandbox's path."""
    if isinstance(value, str):
        for mark, real in placeholders.items():
            value = value.replace(mark, real)
        return value
    if isinstance(value, list):
        return [substituted(item, placeholders) for item in value]
    if isinstance(value, dict):
        return {key: substituted(item, placeholders) for key, item in value.items()}
    return value


# --- what the stream is made of ----------------------------------------------------------------------------

@dataclass
class Message:
    fields: dict
    blob: bytes = b""  # what follows the line: as long as its `size` says, or not

    def render(self, placeholders: dict) -> bytes:
        line = json.dumps(substituted(self.fields, placeholders), separators=(",", ":")).encode()
        return protocol.PREFIX + line + b"\n" + self.blob


@dataclass
class Raw:
    data: bytes

    def render(self, placeholders: dict) -> bytes:
        return self.data


@dataclass
class Nested:
    """A message line of `depth` opening brackets: deeper than any JSON decoder recurses."""
    depth: int

    def render(self, placeholders: dict) -> bytes:
        return protocol.PREFIX + b"[" * self.depth + b"\n"


@dataclass
class Stream:
    pieces: list = field(default_factory=list)

    def render(self, sandbox: Sandbox) -> bytes:
        placeholders = sandbox.placeholders()
        return b"".join(piece.render(placeholders) for piece in self.pieces)

    def projects(self) -> set:
        """The project directories the stream may make in the workdir: PROJECT, OTHER_PROJECT (an apply may name
        it), and each one name that a prepare asks for. Any other name is a path, and never the agent's to make."""
        names = {PROJECT, OTHER_PROJECT}
        for piece in self.pieces:
            fields = getattr(piece, "fields", {})
            name = fields.get("project")
            if fields.get("t") == "prepare" and isinstance(name, str) and name not in ("", ".", "..") \
                    and "/" not in name and "\0" not in name:
                names.add(name)
        return names


PREPARE = Message({"t": "prepare", "workdir": "{work}", "project": PROJECT})  # as a sync begins


# --- one agent, one stream ---------------------------------------------------------------------------------

@dataclass
class AgentRun:
    stdout: bytes
    stderr: bytes
    hung: str | None  # why the agent was killed, if it had to be


def run_agent(stream: bytes, sandbox: Sandbox) -> AgentRun:
    """Write the stream to a fresh agent, close its stdin, and give it DEADLINE_S to finish."""
    proc = subprocess.Popen([sys.executable, "-m", "remote_agent"], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "HOME": str(sandbox.home)})
    collected = {"stdout": [], "stderr": []}
    readers = [threading.Thread(target=lambda s=s, into=into: into.append(s.read()), daemon=True)
               for s, into in ((proc.stdout, collected["stdout"]), (proc.stderr, collected["stderr"]))]

    def write() -> None:
        try:
            proc.stdin.write(stream)
            proc.stdin.close()
        except OSError:  # the agent closed the channel before reading it all: a clean close is allowed
            pass

    writer = threading.Thread(target=write, daemon=True)
    for thread in (*readers, writer):
        thread.start()
    hung = None
    writer.join(DEADLINE_S + len(stream) / 10e6)
    if writer.is_alive():
        hung = f"it stopped reading, {len(stream)} bytes were written to it"
    try:
        proc.wait(timeout=0.1 if hung else DEADLINE_S)
    except subprocess.TimeoutExpired:
        hung = hung or f"it did not exit within {DEADLINE_S:.0f} s of the stream's end"
    if hung:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: whatever it started waits with it
        proc.wait()
    for thread in readers:
        thread.join(DEADLINE_S)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        try:
            pipe.close()
        except OSError:
            pass
    return AgentRun(b"".join(collected["stdout"]), b"".join(collected["stderr"]), hung)


def replies(stdout: bytes) -> list:
    """The agent's messages, each blob skipped by its size: anything else on stdout fails the test."""
    stream, noise, found = io.BytesIO(stdout), [], []
    while True:
        message = protocol.read_message(stream, noise=noise.append)
        assert not noise, f"the agent wrote what is not a message on stdout: {noise[0][:200]!r}"
        if message is None:
            return found
        found.append(message)
        if message["t"] in BLOB_REPLIES:
            for _ in protocol.read_exactly(stream, message["size"]):
                pass


def processes_under(root: Path) -> list:
    """Live processes whose command line or working directory lies in the sandbox."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if (str(root).encode() in cmdline or cwd.startswith(str(root))) and alive(int(name)):
            found.append(int(name))
    return found


@dataclass
class Outcome:
    replies: list  # the agent's messages, hello first
    sandbox: Sandbox
    seconds: float  # from the agent's start to its exit


def survives(stream: Stream, base: Path) -> Outcome:
    """Run the stream against a fresh agent in a fresh sandbox and check every property."""
    sandbox = Sandbox(Path(tempfile.mkdtemp(dir=base)))
    sandbox.make()
    before = sandbox.around_the_projects(stream.projects())
    started = time.monotonic()
    run = run_agent(stream.render(sandbox), sandbox)
    seconds = time.monotonic() - started
    deadline = time.monotonic() + 5  # a job the stream started (`python -c pass`) ends on its own
    while processes_under(sandbox.root) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = processes_under(sandbox.root)
    for pid in left:
        stop_by_pid(pid)
    stderr = run.stderr.decode(errors="replace")
    assert run.hung is None, f"the agent hung: {run.hung}; its stderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    assert not left, f"processes left running in the sandbox: {left}"
    messages = replies(run.stdout)
    assert messages and messages[0]["t"] == "hello", run.stdout[:300]
    for message in messages:
        if message["t"] == "error":
            assert isinstance(message.get("code"), str) and message["code"], message
            text = message.get("message")
            assert isinstance(text, str) and text and "\n" not in text and "Traceback" not in text, message
    planted = sandbox.planted_in_records(stream.projects())
    assert not planted, f"a put's bytes landed in the agent's own records: {planted}"
    after = sandbox.around_the_projects(stream.projects())
    changed = sorted(set(before) ^ set(after) | {path for path in set(before) & set(after)
                                                  if before[path] != after[path]})
    assert not changed, f"the agent wrote outside the project directory: {changed}"
    return Outcome(messages, sandbox, seconds)
