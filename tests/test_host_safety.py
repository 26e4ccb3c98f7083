"""Nothing on the host is lost: a sync never destroys what it did not write, never follows a symlink out of the
project, never changes files under a running job, and two syncs of one project never interleave.

Each test here lost data (or ran the wrong code) before the records, the fence and the staged trees."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_offload
from offload.runs.record import load_runs
from offload.sync.push import project_dir_name
from sshd_server import wait_for

NO_KEEPER = {"OFFLOAD_KEEP_ALIVE": "0"}  # each command its own SSH link, so the host sees them at once
MiB = 1 << 20


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def sync(project: Path, *args: str, env: dict | None = None):
    result = run_offload("sync", "--project", str(project), *args, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def host_dir(box: dict, project: Path) -> Path:
    return Path(box["workdir"]) / project_dir_name(project)


@pytest.fixture
def jobs_stopped(project):
    """Whatever a test asserted, the detached jobs it started on the host do not outlive it."""
    yield
    for meta in load_runs(project):
        try:
            status = json.loads((Path(meta["run_dir"]) / "status.json").read_text())
        except (OSError, ValueError, KeyError):
            continue
        for pgid in (status.get("pgid"),):
            if pgid:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if status.get("supervisor_pid"):
            try:
                os.kill(status["supervisor_pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- (a) a sync never deletes or overwrites what a run wrote -------------------------------------------------

def test_a_checkpoint_a_run_rewrote_survives_ignoring_and_removing_out_locally(box, project):
    write(project / "out" / "ckpt.pt", b"iter 0, synced from the laptop")
    write(project / "train.py", "open('out/ckpt.pt', 'wb').write(b'iter 300, written by the run')\n")
    sync(project)
    assert run_offload("run", "train.py", cwd=project).returncode == 0
    host_ckpt = host_dir(box, project) / "out" / "ckpt.pt"
    assert host_ckpt.read_bytes() == b"iter 300, written by the run"

    write(project / ".gitignore", "out/\n")
    shutil.rmtree(project / "out")
    result = sync(project)

    assert host_ckpt.read_bytes() == b"iter 300, written by the run"
    assert "kept out/ckpt.pt on box: changed on the host since it was synced" in result.stderr
    write(project / ".gitignore", "")
    write(project / "out" / "ckpt.pt", b"a new laptop version")
    sync(project)  # no longer the sync's: neither deleted before nor overwritten now
    assert host_ckpt.read_bytes() == b"iter 300, written by the run"


def test_a_file_a_run_wrote_is_not_overwritten_by_the_laptops_later_copy_unless_forced(box, project):
    write(project / "train.py", "import os\nos.makedirs('out', exist_ok=True)\n"
                                "open('out/samples.txt', 'w').write('written by the run')\n")
    assert run_offload("run", "train.py", cwd=project).returncode == 0
    host_samples = host_dir(box, project) / "out" / "samples.txt"
    assert host_samples.read_text() == "written by the run"

    write(project / "out" / "samples.txt", "the laptop's own file of that name")
    kept = sync(project)
    assert host_samples.read_text() == "written by the run"
    assert ("kept out/samples.txt on box: on the host already, and not written by offload (--force replaces it)"
            in kept.stderr)

    forced = sync(project, "--force")
    assert host_samples.read_text() == "the laptop's own file of that name"
    assert "kept out/samples.txt" not in forced.stderr
    write(project / "out" / "samples.txt", "changed on the laptop")  # forced once, it is the sync's now
    sync(project)
    assert host_samples.read_text() == "changed on the laptop"


def test_a_file_changed_on_the_host_is_kept_when_deleted_locally_and_says_what_force_replaces(box, project):
    write(project / "config.yaml", "lr: 1\n")
    sync(project)
    host_config = host_dir(box, project) / "config.yaml"
    host_config.write_text("lr: 2  # tuned on the host\n")

    write(project / "config.yaml", "lr: 3\n")
    kept = sync(project)
    assert host_config.read_text() == "lr: 2  # tuned on the host\n"
    assert "kept config.yaml on box: changed on the host since it was synced (--force replaces it)" in kept.stderr

    forced = sync(project, "--force")
    assert "replacing config.yaml on box: changed on the host since it was synced (--force)" in forced.stderr
    assert host_config.read_text() == "lr: 3\n"
    host_config.write_text("lr: 4  # tuned again\n")
    (project / "config.yaml").unlink()
    sync(project, "--force")  # --force replaces; it never deletes somebody's file
    assert host_config.read_text() == "lr: 4  # tuned again\n"


def test_a_file_that_appears_on_the_host_while_its_sync_is_in_flight_is_kept(link, tmp_path):
    """Between a put's arrival and its rename (the batch's flush, at the end of the apply) a job or a person
    writes the same path, in a directory the sync itself just made too: the rename never replaces it."""
    from remote_agent import protocol
    agent, workdir = link
    project_dir = Path(agent.request("prepare", workdir=workdir, project="race")["project_dir"])
    agent.send("apply", project_dir=str(project_dir), delete=[], forget=[])
    for relpath in ("top.bin", "made/by/sync.bin"):
        data = b"the laptop's bytes"
        agent.write(protocol.encode("put", path=relpath, kind="file", mode=0o644, mtime_ns=1_700_000_000 * 10**9,
                                    size=len(data) + 1) + data + b"\1", flush=True)
    parts = [project_dir / ".top.bin.offload-part", project_dir / "made" / "by" / ".sync.bin.offload-part"]
    assert wait_for(lambda: all(part.exists() for part in parts), 10), "the agent never wrote the parts"
    for relpath in ("top.bin", "made/by/sync.bin"):
        (project_dir / relpath).write_text("written on the host meanwhile")
    agent.send("end")
    reply = agent.recv()
    assert sorted(reply["kept"]) == [["made/by/sync.bin", "on the host already, and not written by offload"],
                                     ["top.bin", "on the host already, and not written by offload"]]
    assert reply["written"] == 0
    for relpath in ("top.bin", "made/by/sync.bin"):
        assert (project_dir / relpath).read_text() == "written on the host meanwhile"
    assert not any(part.exists() for part in parts)


# --- (b) the project directory is a fence ----------------------------------------------------------------------

def test_a_symlinked_directory_on_the_host_is_never_followed_out_of_the_project(box, project, tmp_path):
    datasets = tmp_path / "datasets" / "owt"
    write(datasets / "shard0.bin", b"the host's own dataset")
    write(project / "data" / "shard0.bin", b"laptop shard 0")
    write(project / "data" / "shard1.bin", b"laptop shard 1")
    sync(project)
    remote = host_dir(box, project)
    shutil.rmtree(remote / "data")
    (remote / "data").symlink_to(datasets)  # the host's owner points data/ at a dataset elsewhere

    (project / "data" / "shard0.bin").unlink()
    write(project / "data" / "shard1.bin", b"laptop shard 1, edited")
    write(project / "data" / "shard2.bin", b"new laptop shard")
    result = sync(project)

    assert sorted(os.listdir(datasets)) == ["shard0.bin"]
    assert (datasets / "shard0.bin").read_bytes() == b"the host's own dataset"
    assert f"data on the host is a symlink to {datasets}, outside the project" in result.stderr
    assert (remote / "data").is_symlink()


def test_a_symlink_inside_the_project_that_points_inside_it_keeps_working(box, project):
    write(project / "cfg" / "a.yaml", "a: 1\n")
    sync(project)
    remote = host_dir(box, project)
    (remote / "cfg").rename(remote / "cfg-real")  # the same files, reached through a link now
    (remote / "cfg").symlink_to("cfg-real")

    write(project / "cfg" / "a.yaml", "a: 2\n")
    write(project / "cfg" / "b.yaml", "b: 1\n")
    sync(project)

    assert (remote / "cfg-real" / "a.yaml").read_text() == "a: 2\n"
    assert (remote / "cfg-real" / "b.yaml").read_text() == "b: 1\n"
    assert (remote / "cfg").is_symlink()


# --- (c), (d): a job never sees a file change under it ------------------------------------------------------

READER = """\
import hashlib, os, sys, time
import numpy as np
versions = dict(line.split() for line in open('versions.txt'))
seen, after_sync, READS_AFTER_SYNC = {}, 0, 20
os.makedirs('out', exist_ok=True)
open('out/reading', 'w').close()
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline and not os.path.exists('stop-reading'):
    data = np.memmap('train.bin', dtype=np.uint8, mode='r')  # re-opened every batch, as nanoGPT does
    digest = hashlib.sha256(data).hexdigest()
    del data
    name = versions.get(digest, 'MIXED')
    seen[name] = seen.get(name, 0) + 1
    if os.path.exists('synced'):  # the test's word that the delta sync has returned
        after_sync += 1
        if after_sync == READS_AFTER_SYNC:
            open('out/read-after-sync', 'w').close()
    time.sleep(0.002)
print('seen', sorted(seen.items()), flush=True)
"""


def version_a_and_b(size: int) -> tuple:
    a = bytearray(os.urandom(size))
    b = bytearray(a)
    for offset in range(MiB // 2, size, 3 * MiB):  # changed blocks all along the file: a patch of several
        b[offset:offset + 300_000] = os.urandom(300_000)
    return bytes(a), bytes(b)


def test_a_delta_sync_while_a_job_rereads_a_memmapped_file_never_changes_it_under_the_job(box, project, jobs_stopped):
    version_a, version_b = version_a_and_b(24 * MiB)
    write(project / "train.bin", version_a)
    write(project / "versions.txt", f"{hashlib.sha256(version_a).hexdigest()} A\n"
                                    f"{hashlib.sha256(version_b).hexdigest()} B\n")
    write(project / "reader.py", READER)
    assert run_offload("run", "--detach", "reader.py", "60", cwd=project).returncode == 0
    remote = host_dir(box, project)
    assert wait_for(lambda: (remote / "out" / "reading").exists(), 60)

    write(project / "train.bin", version_b)
    synced = sync(project)
    assert "by delta" in synced.stderr and "staged" in synced.stderr
    (remote / "synced").touch()
    # the job goes on reading while the sync's tree waits: 20 reads after the sync, then it stops
    assert wait_for(lambda: (remote / "out" / "read-after-sync").exists(), 60), "the job stopped reading"
    (remote / "stop-reading").touch()
    followed = run_offload("logs", "last", "-f", cwd=project)

    assert followed.returncode == 0, followed.stderr
    seen = dict(eval(followed.stdout.split("seen ", 1)[1]))  # noqa: S307 - the job's own repr of a list of pairs
    assert seen.get("A", 0) > 20 and set(seen) == {"A"}, seen  # never MIXED, never B under the job
    assert wait_for(lambda: (remote / "train.bin").read_bytes() == version_b, 10)  # in once the job ended


WAITER = """\
import hashlib, os, sys, time
here = open('code.py').read()
print('started with', here.strip(), flush=True)
while not os.path.exists('finish'):
    time.sleep(0.05)
print('ended with', open('code.py').read().strip(), hashlib.sha256(open('data.bin', 'rb').read()).hexdigest(), flush=True)
"""


def synced_tree(remote: Path) -> dict:
    return {p.relative_to(remote).as_posix(): p.read_bytes() for p in remote.rglob("*")
            if p.is_file() and ".offload" not in p.relative_to(remote).parts and p.name != "finish"}


def test_a_second_run_waiting_for_the_host_leaves_the_first_runs_files_byte_identical(box, project, jobs_stopped):
    write(project / "waiter.py", WAITER)
    write(project / "code.py", "VERSION = 1\n")
    write(project / "data.bin", os.urandom(12 * MiB))  # big enough to go by delta
    assert run_offload("run", "--detach", "waiter.py", cwd=project).returncode == 0
    remote = host_dir(box, project)
    assert wait_for(lambda: "started with" in (Path(load_runs(project)[0]["run_dir"]) / "output.log").read_text(), 30)
    first_files = synced_tree(remote)

    write(project / "code.py", "VERSION = 2\n")
    with open(project / "data.bin", "r+b") as f:
        f.seek(5 * MiB)
        f.write(os.urandom(MiB))
    second = run_offload("run", "--detach", "waiter.py", cwd=project)
    assert second.returncode == 0, second.stderr
    assert "waits for it" in second.stderr

    assert synced_tree(remote) == first_files  # nothing of the running job's tree changed
    (remote / "finish").touch()
    first, later = load_runs(project)
    assert run_offload("logs", first["run_id"], "-f", cwd=project).stdout.splitlines()[-1].startswith(
        "ended with VERSION = 1 " + hashlib.sha256(first_files["data.bin"]).hexdigest())
    log = run_offload("logs", later["run_id"], "-f", cwd=project).stdout
    assert log.startswith("started with VERSION = 2\n")
    assert log.splitlines()[-1] == ("ended with VERSION = 2 "
                                    + hashlib.sha256((project / "data.bin").read_bytes()).hexdigest())


def test_a_plain_sync_while_a_job_runs_is_staged_and_goes_in_when_it_ends(box, project, jobs_stopped):
    write(project / "waiter.py", WAITER)
    write(project / "code.py", "VERSION = 1\n")
    write(project / "data.bin", b"data 1")
    assert run_offload("run", "--detach", "waiter.py", cwd=project).returncode == 0
    remote = host_dir(box, project)
    run_dir = Path(load_runs(project)[0]["run_dir"])
    assert wait_for(lambda: "started with" in (run_dir / "output.log").read_text(), 30)

    write(project / "code.py", "VERSION = 2\n")
    (project / "data.bin").unlink()
    staged = sync(project)
    assert "staged" in staged.stderr
    assert (remote / "code.py").read_text() == "VERSION = 1\n" and (remote / "data.bin").exists()

    (remote / "finish").touch()
    assert "ended with VERSION = 1" in run_offload("logs", "last", "-f", cwd=project).stdout
    assert wait_for(lambda: (remote / "code.py").read_text() == "VERSION = 2\n", 10)
    assert not (remote / "data.bin").exists()
    assert "up to date" in sync(project).stderr  # the staged tree is the live one now, records and all


# --- (4) syncs of one project are serialized; two laptops never share ------------------------------------------

def test_two_syncs_of_one_project_at_once_both_succeed_and_leave_the_laptops_tree(box, project):
    for index in range(400):
        write(project / "src" / f"d{index % 20}" / f"f{index}.txt", f"file {index}\n" * 50)
    commands = [subprocess.Popen([sys.executable, "-m", "offload", "sync", "--project", str(project)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **NO_KEEPER})
                for _ in range(2)]
    try:
        results = []
        for proc in commands:  # communicate: both pipes read, so neither sync blocks on a full one
            _, stderr = proc.communicate(timeout=120)
            results.append((proc.returncode, stderr.decode()))
    finally:
        for proc in commands:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert [code for code, _ in results] == [0, 0], results
    remote = host_dir(box, project)
    for index in range(400):
        assert (remote / "src" / f"d{index % 20}" / f"f{index}.txt").read_text() == f"file {index}\n" * 50
    assert not list(remote.rglob("*.offload-part"))


def test_two_laptops_with_the_same_project_path_never_share_a_host_directory(box, project):
    write(project / "mine.txt", "laptop a\n")
    sync(project, env={"OFFLOAD_LAPTOP_ID": "laptop-a"})
    (project / "mine.txt").unlink()
    write(project / "theirs.txt", "laptop b\n")
    sync(project, env={"OFFLOAD_LAPTOP_ID": "laptop-b"})

    dirs = sorted(p for p in Path(box["workdir"]).iterdir() if p.name.startswith(project.name + "-"))
    assert len(dirs) == 2
    by_file = {tuple(sorted(q.name for q in d.iterdir() if q.name != ".offload")): d for d in dirs}
    assert set(by_file) == {("mine.txt", "report.py"), ("report.py", "theirs.txt")}
