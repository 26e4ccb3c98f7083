"""Every command that reaches a host goes through the link keeper and behaves there exactly as in-process.

`run`, `logs`, `status`, `stop` and `fetch`, like `sync`, hand their command line to the keeper with the
process's stdin, stdout and stderr. Each is compared with the same command run in its own process
(OFFLOAD_KEEP_ALIVE=0) against the same real sshd. That a command really ran in the keeper shows in what its own
process imported (`python -X importtime`): none of paramiko, typer, yaml or rich.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import HOLD, register_host, run_offload, start_offload
from offload.runs.record import load_runs
from pipe_reads import read_line_within, read_rest_within
from procs import alive
from sshd_server import wait_for
from terminal import read_terminal
from test_keeper import installed_copy, keeper_pid, logins

IN_PROCESS = {"OFFLOAD_KEEP_ALIVE": "0"}
HEAVY = (b"paramiko", b"typer", b"yaml", b"rich")  # what the CLI imports and a client of the keeper never does
# A job's output that is not UTF-8, with a NUL, a lone CR and no newline at its very end
RAW_BYTES = b"\xff\xfe not utf-8 \x80\x81\r\n\x00 nul\nh\xc3\xa9llo\r\nno newline at the end"
HOLDING = "print('up', flush=True)\n" + HOLD + "print('released', flush=True)\n"  # until its argument exists
RAW_SCRIPT = f"import sys\nsys.stdout.buffer.write({RAW_BYTES!r})\nsys.stdout.flush()\n"


def offload_process(*args: str, cwd: Path, env: dict | None = None) -> tuple:
    """`python -X importtime -m offload ARGS`: (exit code, stdout bytes, stderr bytes without the import lines,
    whether this process imported the CLI's heavy modules itself)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "offload", *args], cwd=cwd, capture_output=True,
                          timeout=120, env={**os.environ, **(env or {})})
    lines = done.stderr.splitlines(keepends=True)
    imported = [line for line in lines if line.startswith(b"import time:")]
    heavy = any(line.split(b"|")[-1].strip().split(b".")[0] in HEAVY for line in imported)
    return done.returncode, done.stdout, b"".join(line for line in lines if line not in imported), heavy


def through_keeper(*args: str, cwd: Path, env: dict | None = None) -> tuple:
    """(exit code, stdout, stderr) of a command the running keeper ran: the test fails when it ran in-process."""
    code, stdout, stderr, heavy = offload_process(*args, cwd=cwd, env=env)
    assert not heavy, f"`offload {' '.join(args)}` ran in its own process: {stderr[-500:]!r}"
    return code, stdout, stderr


def in_process(*args: str, cwd: Path) -> tuple:
    code, stdout, stderr, heavy = offload_process(*args, cwd=cwd, env=IN_PROCESS)
    assert heavy
    return code, stdout, stderr


def test_a_jobs_bytes_reach_stdout_exactly_through_the_keeper(box, project):
    (project / "raw.py").write_text(RAW_SCRIPT)
    first = run_offload("run", "raw.py", cwd=project)  # starts the keeper, which runs it
    assert first.returncode == 0, first.stderr
    code, stdout, _ = through_keeper("run", "raw.py", cwd=project)
    assert code == 0 and stdout == RAW_BYTES
    for meta in load_runs(project):
        assert (project / ".offload" / "runs" / meta["run_id"] / "output.log").read_bytes() == RAW_BYTES
    code, stdout, _ = in_process("run", "raw.py", cwd=project)
    assert code == 0 and stdout == RAW_BYTES


def test_logs_status_fetch_and_stop_say_what_they_say_in_process(box, project):
    (project / "counter.py").write_text("import os\nos.makedirs('out', exist_ok=True)\n"
                                        "open('out/n.txt', 'w').write('1')\nprint('counted')\n")
    assert run_offload("run", "counter.py", cwd=project).returncode == 0  # the keeper runs from here on
    for args in (["logs", "last"], ["status", "last"], ["stop", "last"], ["status", "nosuch"]):
        kept, own = through_keeper(*args, cwd=project), in_process(*args, cwd=project)
        assert kept == own, args
    kept = through_keeper("fetch", "last", "--to", "kept", cwd=project)
    own = in_process("fetch", "last", "--to", "own", cwd=project)
    assert kept == (own[0], own[1], own[2].replace(b"/own\n", b"/kept\n")) and kept[0] == 0
    assert (project / "kept" / "out" / "n.txt").read_text() == "1"
    assert through_keeper("logs", "last", cwd=project)[1] == b"counted\n"


def test_a_command_while_the_keeper_follows_a_run_runs_in_its_own_process(box, project, tmp_path):
    release = tmp_path / "release"
    (project / "hold.py").write_text(HOLDING)
    followed = start_offload("run", "hold.py", str(release), cwd=project)
    try:
        assert read_line_within(followed.stdout) == b"up\n"
        code, stdout, stderr, heavy = offload_process("status", "last", cwd=project)
        assert heavy, "the busy keeper was handed a second command"  # told busy: it ran here, not after the run
        assert code == 0 and b"on box: running" in stdout, stderr
        release.touch()
        assert followed.wait(timeout=60) == 0
        assert read_rest_within(followed.stdout) == b"released\n"
    finally:
        release.touch()
        followed.kill()
        followed.wait(timeout=10)


def test_a_killed_client_frees_the_keeper_and_the_run_goes_on(offload_home, fresh_sshd, project, tmp_path):
    register_host(offload_home, fresh_sshd)
    release = tmp_path / "release"
    (project / "hold.py").write_text(HOLDING)
    followed = start_offload("run", "hold.py", str(release), cwd=project)
    try:
        assert read_line_within(followed.stdout) == b"up\n"
        pid = keeper_pid(offload_home)
        os.kill(followed.pid, signal.SIGKILL)
        followed.wait(timeout=10)
    finally:
        followed.kill()
        followed.wait(timeout=10)
    # the keeper stops following for nobody: the next command is its own again, on the same kept keeper
    assert wait_for(lambda: not offload_process("status", "last", cwd=project)[3], 30), "the keeper stayed busy"
    code, stdout, _ = through_keeper("status", "last", cwd=project)
    assert code == 0 and b"on box: running" in stdout  # the job never depended on the laptop
    assert keeper_pid(offload_home) == pid and alive(pid)
    release.touch()
    assert wait_for(lambda: b"exited 0" in through_keeper("status", "last", cwd=project)[1], 30)
    assert "detached" not in str(load_runs(project)[0])  # nothing recorded for it, as after a killed process


def ctrl_c_in_a_terminal(project: Path, answer: bytes, env: dict) -> tuple:
    """A followed run under a pty, Ctrl-C as the terminal sends it, `answer` at the question: (exit code, lines)."""
    leader, follower = os.openpty()
    proc = start_offload("run", "sleeper.py", cwd=project, stdin=follower, stdout=follower, stderr=follower,
                         start_new_session=True, env={**os.environ, **env})
    os.close(follower)
    try:
        seen = read_terminal(leader, 60, until=b"\nup\r\n")  # the job's line, not "up to date"
        os.killpg(proc.pid, signal.SIGINT)
        seen = read_terminal(leader, 30, seen, until=b"[y/N]")
        os.write(leader, answer)
        code = proc.wait(timeout=30)
        seen = read_terminal(leader, 30, seen)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(leader)
    # what differs between two runs: run ids, pids, and the project's directory on the host (named by its path here)
    return code, [re.sub(rb"\d{8}-\d{6}-[0-9a-f]{4}|pid \d+|proj-[0-9a-f]{8}", b"ID", line) for line in seen.splitlines()]


def test_ctrl_c_during_a_followed_run_asks_and_ends_as_in_process(box, project, tmp_path):
    in_process_project = tmp_path / "in-process" / "proj"  # the same project twice, so that each run syncs alike
    (project / "sleeper.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(300)\n")
    in_process_project.mkdir(parents=True)
    for path in project.iterdir():
        (in_process_project / path.name).write_bytes(path.read_bytes())
    for answer in (b"y\n", b"n\n"):
        kept = ctrl_c_in_a_terminal(project, answer, {})
        if answer == b"n\n":  # detached, the run holds the host: it must not keep the next one waiting
            assert run_offload("stop", "last", cwd=project).returncode == 0
        own = ctrl_c_in_a_terminal(in_process_project, answer, IN_PROCESS)
        if answer == b"n\n":
            assert run_offload("stop", "last", cwd=in_process_project).returncode == 0
        assert kept == own and kept[0] == 130, (kept, own)
        assert any(b"stop the run on box too? [y/N]" in line for line in kept[1])
    assert len(load_runs(project)) == 2 and len(load_runs(in_process_project)) == 2


def test_hosts_disconnect_while_a_run_is_followed_lets_it_be_followed_to_its_end(offload_home, fresh_sshd, project,
                                                                                 tmp_path):
    register_host(offload_home, fresh_sshd)
    release = tmp_path / "release"
    (project / "hold.py").write_text(HOLDING)
    followed = start_offload("run", "hold.py", str(release), cwd=project)
    try:
        assert read_line_within(followed.stdout) == b"up\n"
        old = keeper_pid(offload_home)
        disconnected = run_offload("hosts", "disconnect")
        assert f"stopped the link keeper (pid {old})" in disconnected.stderr
        through_keeper("status", "last", cwd=project)  # a new keeper serves the next command meanwhile
        new = keeper_pid(offload_home)
        assert new != old and alive(old)
        release.touch()
        assert followed.wait(timeout=60) == 0
        assert read_rest_within(followed.stdout) == b"released\n"
    finally:
        release.touch()
        followed.kill()
        followed.wait(timeout=10)
    assert wait_for(lambda: not alive(old), 10), "the old keeper outlived the command it was running"
    assert alive(new)


def test_an_edit_in_a_subpackage_retires_the_keeper(offload_home, fresh_sshd, project, tmp_path):
    register_host(offload_home, fresh_sshd)
    installed = {"PYTHONPATH": str(installed_copy(tmp_path / "site-packages"))}
    sync_installed = ("sync", "--project", str(project))
    assert run_offload(*sync_installed, cwd=tmp_path, env=installed).returncode == 0
    old = keeper_pid(offload_home)
    with open(tmp_path / "site-packages" / "offload" / "sync" / "push.py", "a") as source:
        source.write("# the next release\n")
    upgraded = run_offload(*sync_installed, cwd=tmp_path, env=installed)
    assert upgraded.returncode == 0, upgraded.stderr
    assert wait_for(lambda: not alive(old), 10), "the keeper of the old code kept running"
    assert keeper_pid(offload_home) != old
    connections = logins(fresh_sshd)
    assert run_offload(*sync_installed, cwd=tmp_path, env=installed).returncode == 0
    assert logins(fresh_sshd) == connections  # and the new keeper keeps the link


def test_an_unknown_host_key_is_asked_about_on_the_clients_terminal(offload_home, fresh_sshd, project, monkeypatch):
    import terminal

    register_host(offload_home, fresh_sshd, trust_key=False)
    question = b"Trust this key and continue connecting? [y/N] "
    monkeypatch.setenv("OFFLOAD_KEEP_ALIVE", "0")
    own = terminal.run_in_terminal(["run", "report.py"], b"n\n", question, cwd=project)
    monkeypatch.delenv("OFFLOAD_KEEP_ALIVE")
    assert run_offload("status", "nosuch", cwd=project).returncode == 1  # a keeper runs from here on
    pid = keeper_pid(offload_home)
    refused = terminal.run_in_terminal(["run", "report.py"], b"n\n", question, cwd=project)
    assert refused == own and refused[0] != 0 and question.decode() in refused[1], (refused, own)
    assert not (offload_home.path / "known_hosts").exists()
    trusted = terminal.run_in_terminal(["run", "report.py"], b"y\n", question, cwd=project)
    assert trusted[0] == 0 and question.decode() in trusted[1] and '"argv": []' in trusted[1], trusted
    assert (offload_home.path / "known_hosts").read_text().count(fresh_sshd.host_public_key) == 1
    assert keeper_pid(offload_home) == pid  # asked by the keeper, on this terminal: the command never ran twice
    assert trusted[1].count(question.decode()) == 1
