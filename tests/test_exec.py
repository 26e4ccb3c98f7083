"""`offload exec` against a real sshd: argv verbatim (hypothesis), stdin bytes through, stdout and stderr on their
own streams, the exit code kept, the synced project's directory with the host's python first on PATH; and a
clear line, not a fallback, when the host is unreachable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import register_host, run_offload
from sshd_server import closed_port
from test_sync import host_project_dir

ECHO_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
CAT = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
SLOW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def offload_exec(project: Path, *argv: str, stdin: bytes = b"", flags: tuple = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "offload", "exec", "--project", str(project), *flags, "--", *argv],
                          input=stdin, capture_output=True, timeout=60)


# Any text an argv can hold: quotes, spaces, $, globs, newlines, non-ASCII; never NUL (no argv holds one).
ARGS = st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12),
                max_size=5)


@SLOW
@given(args=ARGS)
def test_argv_reaches_the_command_verbatim(box, project, args):
    done = offload_exec(project, sys.executable, "-c", ECHO_ARGV, *args)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == args


@SLOW
@given(data=st.binary(max_size=200_000))
def test_stdin_bytes_go_through_and_come_back(box, project, data):
    done = offload_exec(project, sys.executable, "-c", CAT, stdin=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data


def test_stdout_stderr_and_the_exit_code_pass_through(box, project):
    sync_first = run_offload("sync", "--project", str(project))
    assert sync_first.returncode == 0, sync_first.stderr
    done = offload_exec(project, sys.executable, "-c",
                        "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")


def test_it_runs_in_the_synced_project_with_the_hosts_python_first_on_path(box, project):
    (project / "data.txt").write_text("prepared\n")
    done = offload_exec(project, "sh", "-c", 'pwd; echo "$PATH"; cat data.txt')
    assert done.returncode == 0, done.stderr
    cwd, path, data = done.stdout.decode().splitlines()
    assert Path(cwd).resolve() == host_project_dir(box["workdir"], project).resolve()
    assert path.split(":")[0] == os.path.dirname(sys.executable)  # hosts.yaml's python for the box is this one
    assert data == "prepared"
    assert b"synced" in done.stderr  # the new file went first, and said so


def test_shell_flag_runs_one_line_of_sh(box, project):
    done = offload_exec(project, "printf 'a b\\n' | wc -w; exit 4", flags=("--shell",))
    assert done.returncode == 4
    assert done.stdout.split() == [b"2"]


def test_an_unreachable_host_is_one_line_and_no_fallback(offload_home, sshd, project):
    register_host(offload_home, sshd, port=closed_port())
    done = offload_exec(project, "echo", "ran here")
    assert done.returncode != 0
    assert b"ran here" not in done.stdout and b"Traceback" not in done.stderr
    assert done.stderr.decode().count("\n") == 1 and b"unreachable" in done.stderr, done.stderr


def test_no_command_is_a_clear_error(box, project):
    done = subprocess.run([sys.executable, "-m", "offload", "exec", "--project", str(project)],
                          capture_output=True, timeout=60)
    assert done.returncode != 0 and b"Traceback" not in done.stderr
