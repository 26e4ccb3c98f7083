"""An error inside any request is one line to the laptop and the agent serves the next request on the same
channel, through the real sshd: a malformed field in a plain request, one in the middle of an apply's stream
of puts, and, when the stream's framing itself is lost, one line and a closed channel, never a hang."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from offload.errors import LinkLost, RemoteError
from offload.sync.push import project_dir_name, sync_project
from remote_agent import protocol

WHOLE = b"\1"


def put(path: str, data: bytes, mode=0o644) -> bytes:
    return protocol.encode("put", path=path, kind="file", mode=mode, mtime_ns=1_700_000_000_000_000_000,
                           size=len(data) + 1) + data + WHOLE


def start_apply(agent, workdir: str, name: str) -> str:
    project_dir = agent.request("prepare", workdir=workdir, project=name)["project_dir"]
    agent.send("apply", project_dir=project_dir, delete=[], forget=[])
    return project_dir


def one_line_internal_error(excinfo) -> str:
    error = excinfo.value
    assert error.code == "internal" and "report this line" in error.hint
    assert "\n" not in error.detail
    return error.detail


def test_a_malformed_field_in_a_request_is_one_line_and_the_agent_serves_on(link, tmp_path):
    agent, _ = link
    with pytest.raises(RemoteError) as excinfo:
        agent.request("stop", run_dir=str(tmp_path), grace="soon")  # float("soon")
    assert one_line_internal_error(excinfo).startswith("ValueError: ")
    assert agent.request("ping")["t"] == "pong"


def test_a_request_without_a_field_it_must_carry_is_refused_naming_it_and_the_agent_serves_on(link, tmp_path):
    agent, _ = link
    with pytest.raises(RemoteError) as excinfo:
        agent.request("blocks", project_dir=str(tmp_path))  # no paths
    assert excinfo.value.code == "bad_request" and excinfo.value.detail == "the 'blocks' request needs 'paths'"
    with pytest.raises(RemoteError) as excinfo:
        agent.request("start", cwd=str(tmp_path), argv=["true"])  # no run directory: nothing is started
    assert excinfo.value.code == "bad_request" and excinfo.value.detail == "the 'start' request needs 'run_dir'"
    assert agent.request("ping")["t"] == "pong"


def test_an_apply_without_its_project_is_refused_after_its_puts_so_the_stream_stays_in_step(link):
    agent, _ = link
    agent.send("apply", delete=[], forget=[])
    agent.write(put("a.bin", os.urandom(3 << 20)) + put("b.bin", b"b"), flush=True)  # read to `end`, never as requests
    agent.send("end")
    with pytest.raises(RemoteError) as excinfo:
        agent.recv()
    assert excinfo.value.code == "bad_request" and excinfo.value.detail == "the 'apply' request needs 'project_dir'"
    assert agent.request("ping")["t"] == "pong"


def test_a_malformed_put_in_the_middle_of_an_apply_keeps_the_stream_in_step(link, tmp_path):
    agent, workdir = link
    project_dir = start_apply(agent, workdir, "broken-apply")
    big = os.urandom(3 << 20)  # its blob must be skipped, not read as messages
    agent.write(put("first.bin", b"first") + put("bad.bin", big, mode="rw-r--r--") + put("after.bin", big), flush=True)
    agent.send("end")
    with pytest.raises(RemoteError) as excinfo:
        agent.recv()
    assert one_line_internal_error(excinfo).startswith("ValueError: invalid literal for int()")
    assert (Path(project_dir) / "first.bin").read_bytes() == b"first"  # what arrived whole before it is kept
    assert not (Path(project_dir) / "bad.bin").exists()
    assert not list(Path(project_dir).glob(".*.offload-part"))

    root = tmp_path / "proj"  # the same agent then syncs a project as ever
    root.mkdir()
    (root / "train.py").write_text("print('hi')\n")
    assert sync_project(agent, root, workdir, out=io.StringIO()).sent_files == 1
    assert (Path(workdir) / project_dir_name(root) / "train.py").read_text() == "print('hi')\n"


def test_a_put_that_reads_past_its_blob_is_an_error_not_a_lost_link(link, tmp_path):
    agent, workdir = link
    start_apply(agent, workdir, "overrun")
    agent.write(protocol.encode("put", path="empty.bin", kind="file", mode=0o644, mtime_ns=1, size=0), flush=True)
    agent.send("end")  # the put said its blob is empty: no status byte to read
    with pytest.raises(RemoteError) as excinfo:
        agent.recv()
    assert one_line_internal_error(excinfo).startswith("BlobOverrun: ")
    assert agent.request("ping")["t"] == "pong"


def test_an_unreadable_blob_size_is_one_line_then_a_closed_channel_never_a_hang(link, tmp_path):
    agent, workdir = link
    start_apply(agent, workdir, "lost-framing")
    agent.write(protocol.encode("put", path="a.bin", kind="file", mode=0o644, mtime_ns=1, size="lots") + b"xx",
                flush=True)
    with pytest.raises(RemoteError) as excinfo:
        agent.recv(timeout=10)
    assert excinfo.value.code == "protocol" and "blob size" in excinfo.value.detail
    with pytest.raises(LinkLost):  # the agent left: the next request is a lost link at once, not a timeout
        agent.request("ping", timeout=10)
