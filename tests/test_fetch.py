"""`offload fetch` end to end against a real sshd: a real job writes files on the host, the real entry point
fetches them, verified by SHA-256, skipped when already here, resumed after kill -9, and refused when a
pattern or a symlink leads outside the run's project directory. The host side is also driven directly
through a real local agent process."""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import register_host, run_offload
from offload.errors import OffloadError, RemoteError
from offload.sync.fetch import download
from offload.sync.fetch_plan import LocalState, RemoteFile, list_remote, plan_fetch
from procs import local_agent  # noqa: F401  (the fixture)
from sshd_server import wait_for

MiB = 1 << 20
PART_SUFFIX = ".offload-part"
WRITE_OUT = """\
import os, sys
size = int(sys.argv[1])
os.makedirs("out/sub", exist_ok=True)
with open("out/ckpt.pt", "wb") as f:
    while size:
        piece = os.urandom(min(size, 1 << 20))
        f.write(piece)
        size -= len(piece)
with open("out/sub/x.txt", "w") as f:
    f.write("nested\\n")
print("wrote out/")
"""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(MiB), b""):
            digest.update(piece)
    return digest.hexdigest()


def run_job(project: Path, size: int) -> dict:
    """`offload run` a job that writes out/ckpt.pt (`size` random bytes) and out/sub/x.txt; its meta.json."""
    (project / "write_out.py").write_text(WRITE_OUT)
    result = run_offload("run", "write_out.py", str(size), cwd=project)
    assert result.returncode == 0, result.stderr
    (meta_path,) = (project / ".offload" / "runs").glob("*/meta.json")
    return json.loads(meta_path.read_text())


def files_dir(project: Path, meta: dict) -> Path:
    return project / ".offload" / "runs" / meta["run_id"] / "files"


def parts_under(root: Path) -> list:
    return sorted(root.rglob(f"*{PART_SUFFIX}")) if root.exists() else []


def test_fetch_gets_the_runs_files_verified_then_skips_them(box, project):
    meta = run_job(project, 3 * MiB)
    host_dir = Path(meta["project_dir"])  # the run's project dir on the host (a local path here)
    assert host_dir != project

    result = run_offload("fetch", "last", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # not a terminal: no bar, nothing on stdout
    dest = files_dir(project, meta)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == \
        ["out/ckpt.pt", "out/sub/x.txt"]
    assert sha256(dest / "out/ckpt.pt") == sha256(host_dir / "out/ckpt.pt")
    assert (dest / "out/sub/x.txt").read_text() == "nested\n"
    assert (dest / "out/ckpt.pt").stat().st_mtime_ns == (host_dir / "out/ckpt.pt").stat().st_mtime_ns
    assert f"2 files (3.1 MB) from box -> {dest}" in result.stderr
    assert parts_under(dest) == []

    inode = (dest / "out/ckpt.pt").stat().st_ino
    again = run_offload("fetch", "last", cwd=project)
    assert again.returncode == 0, again.stderr
    assert f"nothing to transfer, 2 files already here with the same SHA-256 -> {dest}" in again.stderr
    assert (dest / "out/ckpt.pt").stat().st_ino == inode  # not rewritten

    local = dest / "out/sub/x.txt"
    stamp = local.stat().st_mtime_ns
    local.write_text("NESTED\n")  # same size and mtime, other bytes: only its hash tells, so it is fetched again
    os.utime(local, ns=(stamp, stamp))
    third = run_offload("fetch", meta["run_id"][:17], cwd=project)
    assert third.returncode == 0, third.stderr
    assert "1 file (7 B) from box, 1 already here with the same SHA-256" in third.stderr
    assert (dest / "out/sub/x.txt").read_text() == "nested\n"


def test_explicit_patterns_and_to_dir(box, project, tmp_path):
    meta = run_job(project, 1000)
    elsewhere = tmp_path / "elsewhere"
    result = run_offload("fetch", meta["run_id"], "out/**/*.txt", "--to", str(elsewhere), cwd=project)
    assert result.returncode == 0, result.stderr
    assert [p.relative_to(elsewhere).as_posix() for p in elsewhere.rglob("*") if p.is_file()] == ["out/sub/x.txt"]
    assert not files_dir(project, meta).exists()

    relative = run_offload("fetch", "last", "out/ckpt.pt", "write_out.py", "--to", "copies", cwd=project)
    assert relative.returncode == 0, relative.stderr
    assert sorted(p.name for p in (project / "copies").rglob("*") if p.is_file()) == ["ckpt.pt", "write_out.py"]
    assert sha256(project / "copies/out/ckpt.pt") == sha256(Path(meta["project_dir"]) / "out/ckpt.pt")

    no_run_named = run_offload("fetch", "out/ckpt.pt", "--to", "bare", cwd=project)  # RUN left out: the last run's
    assert no_run_named.returncode == 0, no_run_named.stderr
    assert sha256(project / "bare/out/ckpt.pt") == sha256(Path(meta["project_dir"]) / "out/ckpt.pt")

    nothing = run_offload("fetch", "last", "logs/*.txt", cwd=project)
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stderr.strip() == f"fetch: no files match logs/*.txt in {meta['project_dir']} on box"

    some = run_offload("fetch", "last", "out/sub", "missing/**", "--to", str(tmp_path / "some"), cwd=project)
    assert some.returncode == 0, some.stderr
    assert f"fetch: no files match missing/** in {meta['project_dir']} on box" in some.stderr
    assert (tmp_path / "some/out/sub/x.txt").read_text() == "nested\n"


def test_kill_9_mid_fetch_resumes_and_never_leaves_a_partial_file_under_the_final_name(box, project):
    size = 64 * MiB
    meta = run_job(project, size)
    expected = sha256(Path(meta["project_dir"]) / "out/ckpt.pt")
    final = files_dir(project, meta) / "out/ckpt.pt"
    part = final.with_name(f".ckpt.pt{PART_SUFFIX}")
    part_size = lambda: part.stat().st_size if part.exists() else 0  # noqa: E731
    kills, landed_mid_transfer = 5, 0
    previous = 0
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-m", "offload", "fetch", "last"], cwd=project,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # once this fetch has written bytes of its own, let it run a random moment more
            assert wait_for(lambda: part_size() > previous or proc.poll() is not None, 60)
            time.sleep(random.uniform(0, 0.03))  # loopback moves ~250 MB/s: 5 kills stay well inside 64 MiB
            proc.kill()
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert not final.exists() or sha256(final) == expected  # never anything but the whole, verified file
        now = part_size()
        if part.exists():
            assert previous <= now <= size  # resumed, not restarted (whole: killed before the rename)
            landed_mid_transfer += now < size
        previous = now
    assert landed_mid_transfer >= 3, "the kills should land while the file is being transferred"

    result = run_offload("fetch", "last", cwd=project)
    assert result.returncode == 0, result.stderr
    assert sha256(final) == expected
    assert "did not match" not in result.stderr  # the resumed part was good
    assert parts_under(files_dir(project, meta)) == []


def test_fetch_refuses_what_leads_outside_the_project(box, project, tmp_path):
    meta = run_job(project, 1000)
    host_dir = Path(meta["project_dir"])
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret\n")
    (outside / "dir" / "key.txt").write_text("key\n")
    (host_dir / "out" / "escape.txt").symlink_to(outside / "secret.txt")
    (host_dir / "linked").symlink_to(outside / "dir")
    (host_dir / "out" / "inside.txt").symlink_to(host_dir / "out" / "sub" / "x.txt")  # stays in: allowed
    dest = tmp_path / "dest"
    for args in (["../x"], ["out/../../outside/secret.txt"], [str(outside / "secret.txt")], ["out/escape.txt"],
                 ["linked/key.txt"], ["linked"], ["**/key.txt"], []):  # [] is out/**, which holds escape.txt
        result = run_offload("fetch", "last", *args, "--to", str(dest), cwd=project)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("offload: error: refusing "), (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert not dest.exists(), args  # nothing at all was fetched
    assert "outside the run's project directory" in run_offload("fetch", "last", "linked", cwd=project).stderr

    (host_dir / "out" / "escape.txt").unlink()
    result = run_offload("fetch", "last", "--to", str(dest), cwd=project)
    assert result.returncode == 0, result.stderr
    assert (dest / "out/inside.txt").read_text() == "nested\n"  # a link inside the project is followed


# The real agent, but a compromised host's: its listing for any pattern holds out/ckpt.pt first, then the paths
# in stray.json beside it, and it serves PAYLOAD for each. Started as `python -m remote_agent` in the shipped
# agent's directory (hosts.yaml's python is this file), so it imports the agent from there.
HOSTILE_AGENT = """\
#!{python}
import hashlib, json, os, sys
sys.path.insert(0, os.getcwd())
from remote_agent.__main__ import Agent
from remote_agent.protocol import send_blob

PAYLOAD = b"#!/bin/sh\\necho pwned\\n"
STRAY = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "stray.json")))


class Hostile(Agent):
    def handle(self, message):
        if message["t"] == "list_files":
            entry = [len(PAYLOAD), 0, hashlib.sha256(PAYLOAD).hexdigest()]
            self.send("file_list", project_dir=message["project_dir"], unmatched=[],
                      files=[[path, *entry] for path in ["out/ckpt.pt", *STRAY]])
        elif message["t"] == "read_file":
            send_blob(self.out, "file_chunk", 0, PAYLOAD)
            self.send("file_end", offset=len(PAYLOAD), size=len(PAYLOAD))
        else:
            super().handle(message)


Hostile(sys.stdin.buffer, os.fdopen(os.dup(1), "wb")).serve()
"""
STRAYS = (["train.py"], [".git/hooks/pre-commit"], ["out/x/.GIT/config"], ["../outside"], ["out/../../x"],
          ["/tmp/offload-stray"], ["out/a", "out/a/b"])


def tree_of(root: Path) -> dict:
    """relpath -> bytes of every file below root (symlinks as their target's text)."""
    return {p.relative_to(root).as_posix(): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_a_compromised_host_listing_paths_it_was_not_asked_for_gets_nothing_written(offload_home, sshd, project, tmp_path):
    register_host(offload_home, sshd)
    meta = run_job(project, 1000)  # an honest run first: the agent is installed, the run recorded
    (project / "train.py").write_text("print('the real train.py')\n")
    (project / ".git" / "hooks").mkdir(parents=True)
    (project / ".git" / "hooks" / "pre-commit.sample").write_text("#!/bin/sh\n")
    hostile = tmp_path / "hostile" / "python"
    hostile.parent.mkdir()
    hostile.write_text(HOSTILE_AGENT.format(python=sys.executable))
    hostile.chmod(0o755)
    register_host(offload_home, sshd, python=str(hostile), trust_key=False)  # the same box, compromised since
    project_before, around_before = tree_of(project), sorted(os.listdir(tmp_path))
    for stray in STRAYS:
        (hostile.parent / "stray.json").write_text(json.dumps(stray))
        for to in ([], ["--to", str(project)]):  # the run's files dir (what --resume puts back), or the project
            result = run_offload("fetch", "last", *to, cwd=project, env={"OFFLOAD_KEEP_ALIVE": "0"})
            assert result.returncode == 1, (stray, to, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"offload: error: box listed {stray[-1]!r}, "), (stray, lines)
            assert "nothing was fetched" in lines[0] and "Traceback" not in result.stderr
            assert tree_of(project) == project_before, (stray, to)  # train.py as it was, no hook, no files dir
            assert sorted(os.listdir(tmp_path)) == around_before, (stray, to)  # nothing beside the project
    assert not Path("/tmp/offload-stray").exists()
    assert not files_dir(project, meta).exists()


def test_a_local_runs_files_are_fetched_through_the_local_agent(offload_home, project):
    meta = run_job(project, 2 * MiB)  # no host registered: the run is local, its project dir is this one
    assert meta["host"] == "local" and Path(meta["project_dir"]) == project
    result = run_offload("fetch", "last", cwd=project)
    assert result.returncode == 0, result.stderr
    dest = files_dir(project, meta)
    assert sha256(dest / "out/ckpt.pt") == sha256(project / "out/ckpt.pt")
    assert "from this machine" in result.stderr

    # a part that is not a prefix of the file (another version, a disk error) is discarded, then fetched whole
    (dest / "out/ckpt.pt").unlink()
    (dest / "out" / f".ckpt.pt{PART_SUFFIX}").write_bytes(b"\0" * MiB)
    again = run_offload("fetch", "last", "out/ckpt.pt", cwd=project)
    assert again.returncode == 0, again.stderr
    assert "out/ckpt.pt did not match its SHA-256 (resumed): fetching it again" in again.stderr
    assert sha256(dest / "out/ckpt.pt") == sha256(project / "out/ckpt.pt")
    assert parts_under(dest) == []


# --- the host side, through a real local agent process --------------------------------------------

@pytest.fixture
def agent(local_agent):
    """A real agent process (procs.local_agent), checked gone afterwards."""
    return local_agent


def listed(agent, project_dir: Path, *patterns: str) -> list:
    return [f.path for f in list_remote(agent, str(project_dir), list(patterns))["files"]]


def test_patterns_match_like_globs_inside_the_project(agent, tmp_path):
    root = tmp_path / "proj"
    for relpath in ("out/a.pt", "out/.hidden", "out/deep/er/b.pt", "logs/run.txt", "top.txt",
                    ".offload/runs/x/output.log", f"out/.c.pt{PART_SUFFIX}"):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(relpath)
    (root / "out" / "deep" / "loop").symlink_to(root / "out")  # a link back up is not followed: it would loop
    (root / "out" / "logs").symlink_to(root / "logs")  # a link to a directory inside is followed
    assert listed(agent, root, "out/*.pt") == ["out/a.pt"]
    assert listed(agent, root, "**/*.pt") == ["out/a.pt", "out/deep/er/b.pt"]
    assert listed(agent, root, "out/**/*.txt") == ["out/logs/run.txt"]
    assert listed(agent, root, "out") == listed(agent, root, "out/**") == listed(agent, root, "./out/")
    assert "out/.hidden" in listed(agent, root, "out/**")
    assert listed(agent, root, "**/*.txt") == ["logs/run.txt", "out/logs/run.txt", "top.txt"]  # .offload/ only when named
    assert listed(agent, root, ".offload/runs/*/output.log") == [".offload/runs/x/output.log"]
    assert listed(agent, root, "top.txt", "top.txt", "t?p.*") == ["top.txt"]
    reply = list_remote(agent, str(root), ["out/a.pt", "nope/*"])
    (only,) = reply["files"]
    assert only.size == len("out/a.pt") and only.sha256 == hashlib.sha256(b"out/a.pt").hexdigest()
    assert reply["unmatched"] == ["nope/*"]


def test_hashes_are_cached_on_the_host_but_never_for_a_file_still_settling(agent, tmp_path):
    root = tmp_path / "proj"
    (root / "out").mkdir(parents=True)
    old, fresh = root / "out" / "old.bin", root / "out" / "fresh.bin"
    old.write_bytes(b"settled")
    os.utime(old, ns=(1_600_000_000 * 10**9,) * 2)
    fresh.write_bytes(b"just written")
    listed(agent, root, "out/**")
    cache = json.loads((root / ".offload" / "fetch-hashes.json").read_text())["entries"]
    assert list(cache) == [str(old)]  # fresh.bin may change again within its mtime's tick
    cache[str(old)][3] = "0" * 64  # the cache is what answers, as long as size, mtime and inode match
    (root / ".offload" / "fetch-hashes.json").write_text(json.dumps({"entries": cache}))
    assert list_remote(agent, str(root), ["out/old.bin"])["files"][0].sha256 == "0" * 64
    os.utime(old, ns=(1_600_000_001 * 10**9,) * 2)  # touched: hashed again
    assert list_remote(agent, str(root), ["out/old.bin"])["files"][0].sha256 == hashlib.sha256(b"settled").hexdigest()


def test_a_file_that_keeps_changing_is_a_clear_error_and_never_lands(agent, tmp_path):
    root, dest = tmp_path / "proj", tmp_path / "dest"
    (root / "out").mkdir(parents=True)
    (root / "out" / "live.bin").write_bytes(b"a" * 5000)
    (remote,) = list_remote(agent, str(root), ["out/live.bin"])["files"]
    (root / "out" / "live.bin").write_bytes(b"b" * 5000)  # rewritten on the host after it was listed
    with pytest.raises(OffloadError, match="out/live.bin from this machine does not match its SHA-256 after two tries"):
        download(agent, str(root), remote, dest, 0, lambda n: None, sys.stderr)
    assert not (dest / "out" / "live.bin").exists()
    assert not (dest / "out" / f".live.bin{PART_SUFFIX}").exists()  # nothing unverified is kept
    assert agent.request("device")  # the agent is still in step for the next request


def test_the_host_refuses_paths_that_leave_the_project_whatever_the_laptop_sends(agent, tmp_path):
    root = tmp_path / "proj"
    (root / "out").mkdir(parents=True)
    (tmp_path / "secret").write_text("secret")
    (root / "out" / "link").symlink_to(tmp_path)
    for path in ("../secret", "/etc/passwd", "out/link/secret", "out/../../secret"):
        with pytest.raises(RemoteError) as refused:
            agent.request("read_file", project_dir=str(root), path=path, offset=0, end=None)
        assert refused.value.code == "refused", path
    with pytest.raises(RemoteError) as refused:
        agent.request("list_files", project_dir=str(root), patterns=["out/**"])
    assert refused.value.code == "refused" and "resolves to" in refused.value.message


def test_a_sibling_whose_name_extends_the_projects_is_outside_it(agent, tmp_path):
    root, sibling = tmp_path / "proj-abc", tmp_path / "proj-abc-old"  # "proj-abc" is a prefix of its real path
    (sibling / "out").mkdir(parents=True)
    (sibling / "out" / "ckpt.pt").write_text("the old project's checkpoint")
    root.mkdir()
    (root / "out").symlink_to(sibling / "out")
    for patterns in (["out/**"], ["out/ckpt.pt"], ["**/*.pt"]):
        with pytest.raises(RemoteError) as refused:
            agent.request("list_files", project_dir=str(root), patterns=patterns)
        assert refused.value.code == "refused", patterns
        assert f"resolves to {sibling / 'out'}" in refused.value.message, patterns
    with pytest.raises(RemoteError) as refused:
        agent.request("read_file", project_dir=str(root), path="out/ckpt.pt", offset=0, end=None)
    assert refused.value.code == "refused" and "outside the run's project directory" in refused.value.message


def test_a_listing_is_checked_path_by_path_against_the_patterns_asked_for():
    from offload.sync.fetch_paths import INTO_RECORDS, first_stray

    honest = ["out/ckpt.pt", "out/sub/x.txt", "out/.hidden", "out/a..b"]
    assert first_stray(["out/**"], honest) is None
    assert first_stray(["out/*.pt", "logs"], ["out/ckpt.pt", "logs/run/1.txt"]) is None
    assert first_stray(["out/*.pt"], ["out/ckpt.pt", "out/sub/x.pt"])[0] == "out/sub/x.pt"  # * stays in one name
    for stray in ("train.py", "outside/x", "../x", "out/../x", "out/./x", "./out/x", "out//x", "out/", "/etc/passwd",
                  "out/x\\..\\..\\y", "out/x\0", "", None, 7):
        assert first_stray(["out/**"], [*honest, stray]) is not None, stray
    for inside_records in (".git/hooks/pre-commit", ".GIT/config", "sub/.git/config", ".offload/runs/x/meta.json",
                           "out/.Offload/x"):
        assert first_stray(["**"], [inside_records]) == (inside_records, INTO_RECORDS)
    assert first_stray(["out/**"], ["out/a", "out/a/b"]) == ("out/a/b", "out/a is listed as a file too")


def test_fetch_never_writes_through_a_symlink_that_leads_out_of_its_destination(offload_home, project, tmp_path):
    run_job(project, 1000)  # a local run: fetched through the local agent
    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    (dest / "out").symlink_to(elsewhere)
    result = run_offload("fetch", "last", "--to", str(dest), cwd=project)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"offload: error: {dest / 'out'} leads to {elsewhere}, outside {dest}")
    assert list(elsewhere.iterdir()) == []

    (dest / "out").unlink()
    (dest / "real-out").mkdir()
    (dest / "out").symlink_to(dest / "real-out")  # a link that stays inside is written through
    assert run_offload("fetch", "last", "--to", str(dest), cwd=project).returncode == 0
    assert (dest / "real-out" / "sub" / "x.txt").read_text() == "nested\n"
    (dest / "real-out" / "ckpt.pt").unlink()
    (dest / "real-out" / "ckpt.pt").symlink_to(elsewhere / "ckpt.pt")  # nor is a file that is a link
    refused = run_offload("fetch", "last", "--to", str(dest), cwd=project)
    assert refused.returncode == 1 and "ckpt.pt is a symlink here" in refused.stderr
    assert list(elsewhere.iterdir()) == []


def test_plan_skips_same_hashes_and_resumes_parts_that_can_be_prefixes():
    a, b, c, d = (RemoteFile(name, 100, 1, name * 64) for name in "abcd")
    plan = plan_fetch([a, b, c, d], {
        "a": LocalState(final_sha256="a" * 64),           # here already
        "b": LocalState(final_sha256="x" * 64, part_size=40),  # here, but another version; a part to resume
        "c": LocalState(part_size=140),                    # a part longer than the file: start over
    })
    assert plan.skip == [a]
    assert plan.fetch == [(b, 40), (c, 0), (d, 0)]
    assert plan.bytes_to_fetch == 60 + 100 + 100
