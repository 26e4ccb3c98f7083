"""What the user sees when the host is not fit for a sync or a run: one line that says what is wrong and
what to do, a non-zero exit, no traceback; nothing half-written left behind; and a good sync right after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CliResult, run_offload, register_host
from sshd_server import descendants, wait_for

from offload.sync.scan import scan_project
from offload.sync.push import project_dir_name

PART_SUFFIX = ".offload-part"
REPO_ROOT = Path(__file__).resolve().parent.parent
DISK_HINT = "(hint: free space there, or point workdir at a bigger disk in hosts.yaml)"


def error_line(result) -> str:
    """The one line of a failure: progress lines ("sync: ...", "offload: run ...") aside, stderr holds only it."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith(("sync:", "offload: run"))]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("offload: error: ")
    return lines[0]


def no_parts(workdir: Path) -> bool:
    """No file being written (name.offload-part) and no agent being installed (HASH.part.PID) left behind."""
    return not [path for path in workdir.rglob("*") if path.name.endswith(PART_SUFFIX) or ".part." in path.name]


def good_sync(project: Path, host: dict) -> Path:
    """A sync that works, every synced file whole on the host, nothing half-written anywhere in the workdir."""
    result = run_offload("sync", "--project", str(project))
    assert result.returncode == 0, result.stderr
    host_dir = Path(host["workdir"]) / project_dir_name(project)
    for entry in scan_project(project):
        if entry.kind == "file":
            assert (host_dir / entry.path).read_bytes() == (project / entry.path).read_bytes()
    assert no_parts(Path(host["workdir"]))
    return host_dir


class Tmpfs:
    """A tmpfs mounted on a directory the test made; always unmounted, by the fixture."""

    def __init__(self, path: Path):
        self.path, self.mounted = path, False

    def mount(self, options: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.path)], check=True, timeout=10)
        self.mounted = True
        return self.path

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True, timeout=10)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=True, timeout=10)
            self.mounted = False


@pytest.fixture
def tmpfs(tmp_path):
    mounts = []

    def make(name: str) -> Tmpfs:
        mounts.append(Tmpfs(tmp_path / name))
        return mounts[-1]

    try:
        yield make
    finally:
        for mount in reversed(mounts):
            mount.unmount()


@pytest.fixture(scope="session")
def python_without_torch(tmp_path_factory) -> str:
    """A venv of the base interpreter (not the project venv, which has torch), made once per session."""
    venv = tmp_path_factory.mktemp("notorch") / "venv"
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base_python), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python3"
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True, timeout=30).returncode != 0
    return str(python)


# --- the interpreter ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["sync"], ["run", "report.py"]])
def test_a_missing_python_names_the_path_tried(offload_home, sshd, project, command):
    host = register_host(offload_home, sshd, python="/nonexistent/python")

    result = run_offload(*command, cwd=project)

    assert error_line(result) == ("offload: error: python not found on box at /nonexistent/python "
                                  "(hint: set python for box in hosts.yaml to the interpreter that has torch)")
    assert no_parts(Path(host["workdir"]))
    good_sync(project, register_host(offload_home, sshd))


def test_a_python_without_torch_names_the_path_tried(offload_home, sshd, project, python_without_torch):
    host = register_host(offload_home, sshd, python=python_without_torch)

    result = run_offload("run", "report.py", cwd=project)

    assert error_line(result) == (f"offload: error: python {python_without_torch} on box has no torch (hint: install "
                                  "torch there, or set python for this host in hosts.yaml to one that has it)")
    assert result.stdout == ""
    assert no_parts(Path(host["workdir"]))
    register_host(offload_home, sshd)
    ran = run_offload("run", "report.py", cwd=project)
    assert ran.returncode == 0 and '"argv": []' in ran.stdout, ran.stderr


# --- the workdir ------------------------------------------------------------------------------------------

def test_a_read_only_workdir_is_reported_and_fixing_it_makes_sync_work(offload_home, sshd, project, tmpfs):
    disk = tmpfs("ro")
    workdir = disk.mount("size=4m,ro")
    host = register_host(offload_home, sshd, workdir=str(workdir))

    result = run_offload("sync", "--project", str(project))

    assert error_line(result) == (f"offload: error: cannot install the agent in {workdir} on box: mkdir: cannot "
                                  f"create directory '{workdir}/.agent': Read-only file system (hint: set workdir "
                                  "for this host in hosts.yaml to a writable directory)")
    disk.remount("rw")
    good_sync(project, host)


def test_a_read_only_project_dir_is_reported_and_fixing_it_makes_sync_work(offload_home, sshd, project, tmpfs):
    host = register_host(offload_home, sshd)
    project_dir = Path(host["workdir"]) / project_dir_name(project)
    disk = tmpfs(str(project_dir.relative_to(project.parent)))
    disk.mount("size=4m,ro")

    result = run_offload("sync", "--project", str(project))

    assert error_line(result) == (f"offload: error: cannot write to workdir {host['workdir']} on box: Read-only "
                                  f"file system ({project_dir}/.offload) (hint: set workdir for this host in "
                                  "hosts.yaml to a directory you can write to)")
    disk.remount("rw")
    good_sync(project, host)


def test_a_workdir_under_a_regular_file_is_reported(offload_home, sshd, project, tmp_path):
    (tmp_path / "a_file").write_text("not a directory\n")
    register_host(offload_home, sshd, workdir=str(tmp_path / "a_file" / "offload"))

    result = run_offload("sync", "--project", str(project))

    assert error_line(result) == (f"offload: error: cannot install the agent in {tmp_path}/a_file/offload on box: "
                                  f"mkdir: cannot create directory '{tmp_path}/a_file': Not a directory (hint: set "
                                  "workdir for this host in hosts.yaml to a writable directory)")
    assert (tmp_path / "a_file").read_text() == "not a directory\n"
    good_sync(project, register_host(offload_home, sshd))


# --- the disk ---------------------------------------------------------------------------------------------

def test_a_project_bigger_than_the_free_space_is_refused_before_sending(offload_home, sshd, project, tmpfs):
    disk = tmpfs("small")
    workdir = disk.mount("size=2m")
    host = register_host(offload_home, sshd, workdir=str(workdir))
    (project / "data.bin").write_bytes(os.urandom(3_000_000))

    result = run_offload("sync", "--project", str(project))

    line = error_line(result)
    assert line.startswith("offload: error: not enough disk on box: 3.0 MB to send, ")
    assert line.endswith(f" free {DISK_HINT}")
    assert not (workdir / project_dir_name(project) / "data.bin").exists()
    assert no_parts(workdir)
    disk.remount("size=8m")
    good_sync(project, host)


def test_a_disk_that_fills_while_writing_is_reported_and_leaves_no_partial_file(offload_home, sshd, project, tmpfs):
    disk = tmpfs("small")
    workdir = disk.mount("size=1m")
    host = register_host(offload_home, sshd, workdir=str(workdir))
    (project / "many").mkdir()
    for number in range(600):  # 600 bytes pass the free-space check; 600 files of a 4 kB page each do not fit
        (project / "many" / f"f{number:03}").write_text("x")

    result = run_offload("sync", "--project", str(project))

    assert result.stderr.startswith("sync: 601 files, 848 B; largest: report.py (248 B), many/f000 (1 B), many/f001")
    line = error_line(result)
    assert line.startswith(f"offload: error: disk full on box (workdir {workdir}): No space left on device (many/f")
    assert line.endswith(f") {DISK_HINT}")
    assert no_parts(workdir)
    disk.remount("size=8m")
    good_sync(project, host)


def test_a_disk_too_full_for_the_agent_is_reported(offload_home, sshd, project, tmpfs):
    disk = tmpfs("tiny")
    workdir = disk.mount("size=8k")
    host = register_host(offload_home, sshd, workdir=str(workdir))

    result = run_offload("sync", "--project", str(project))

    line = error_line(result)
    assert line.startswith(f"offload: error: not enough disk on box to install the agent in {workdir}: tar: ")
    assert line.endswith(f": Cannot write: No space left on device {DISK_HINT}")
    assert os.listdir(workdir / ".agent") == []  # the half-extracted copy is gone
    disk.remount("size=8m")
    good_sync(project, host)


# --- the link and the shell -------------------------------------------------------------------------------

def agent_pids(server) -> list:
    return [proc.pid for proc in descendants(server.pid) if proc.comm.startswith("python")
            and b"remote_agent" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()]


def test_an_agent_killed_mid_sync_is_a_lost_link_and_the_next_sync_completes(offload_home, fresh_sshd, project):
    host = register_host(offload_home, fresh_sshd)
    (project / "weights.bin").write_bytes(os.urandom(96 << 20))
    part = Path(host["workdir"]) / project_dir_name(project) / f".weights.bin{PART_SUFFIX}"
    proc = subprocess.Popen([sys.executable, "-m", "offload", "sync", "--project", str(project)], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: part.exists() and part.stat().st_size > 0, 30)
        [agent_pid] = agent_pids(fresh_sshd)
        os.kill(agent_pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    line = error_line(CliResult(proc.returncode, stdout.decode(), stderr.decode()))
    assert line.startswith("offload: error: lost the link to box: ")
    assert not (part.parent / "weights.bin").exists()
    good_sync(project, host)  # the killed agent's partial file is replaced, then renamed


def test_shell_noise_from_bashrc_breaks_neither_sync_nor_run(offload_home, fresh_sshd, project):
    (fresh_sshd.remote_home / ".bashrc").write_text(
        "echo 'Welcome to the GPU box'\n"
        "echo 'conda: base activated' >&2\n"
        "printf 'no newline at the end'\n")
    probe = subprocess.run(["ssh", "-F", "/dev/null", "-i", str(fresh_sshd.client_key_path),
                            "-p", str(fresh_sshd.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                            "-o", "UserKnownHostsFile=/dev/null", f"{fresh_sshd.user}@{fresh_sshd.host}", "true"],
                           capture_output=True, timeout=30)
    assert probe.stdout == b"Welcome to the GPU box\nno newline at the end"  # the noise is real
    host = register_host(offload_home, fresh_sshd)

    synced = run_offload("sync", "--project", str(project))
    assert synced.returncode == 0, synced.stderr
    assert "Welcome" not in synced.stderr + synced.stdout
    ran = run_offload("run", "report.py", "--flag", cwd=project)

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0].startswith('{"argv": ["--flag"]')
    assert len(ran.stdout.splitlines()) == 1
    assert good_sync(project, host).is_dir()
