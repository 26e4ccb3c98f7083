"""A run's files are that run's: every run of a project shares its directory on the host, so each run records
what it wrote (outputs.json) and `offload fetch RUN` returns those versions, or says which later run changed a
file, against a real sshd, real jobs and real files. The snapshot diff and the choice of versions are also
tested directly, on real files and plain records."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from conftest import run_offload
from offload.runs.record import load_runs
from remote_agent import outputs
from remote_agent.protocol import CHANGED, DELETED, NEWER, Withheld
from sshd_server import wait_for

# writes (or deletes) files under out/, each holding the id of the run that wrote it
WRITER = """\
import os, sys
run = os.environ["OFFLOAD_RUN_ID"]
for action in sys.argv[1:]:
    verb, path = action.split(":")
    if verb == "write":
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(f"{path} of {run}\\n" * 1000)
    elif verb == "delete":
        os.remove(path)
    elif verb == "sleep":
        print("done", flush=True)
        import time
        time.sleep(int(path))
print("done", flush=True)
"""


def offload_run(project: Path, *actions: str) -> dict:
    """`offload run` the writer with these actions; the new run's meta.json."""
    (project / "writer.py").write_text(WRITER)
    result = run_offload("run", "writer.py", *actions, cwd=project)
    assert result.returncode == 0, result.stderr
    return load_runs(project)[-1]


def fetched(project: Path, meta: dict) -> dict:
    """relpath -> text of each file fetched into the run's files dir."""
    dest = project / ".offload" / "runs" / meta["run_id"] / "files"
    return {p.relative_to(dest).as_posix(): p.read_text() for p in dest.rglob("*") if p.is_file()}


def content(path: str, meta: dict) -> str:
    return f"{path} of {meta['run_id']}\n" * 1000


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetching_the_first_of_two_runs_that_wrote_out_ckpt_says_so_instead_of_returning_the_seconds(box, project):
    first = offload_run(project, "write:out/ckpt.pt", "write:out/first.txt", "write:out/gone.txt")
    host = Path(first["project_dir"])
    (host / "out" / "notes.txt").write_text("written on the host by no run\n")
    second = offload_run(project, "write:out/ckpt.pt", "write:out/second.txt", "delete:out/gone.txt")

    result = run_offload("fetch", first["run_id"], cwd=project)
    assert result.returncode == 3, result.stderr  # some files withheld
    assert (f"fetch: out/ckpt.pt was changed by run {second['run_id']} after run {first['run_id']} wrote it; "
            "not fetched (--current fetches the version there now)") in result.stderr
    assert f"fetch: out/gone.txt was deleted by run {second['run_id']} after run {first['run_id']} wrote it" in result.stderr
    assert f"fetch: out/second.txt was changed by run {second['run_id']} after run {first['run_id']} ended" in result.stderr
    assert fetched(project, first) == {"out/first.txt": content("out/first.txt", first),  # the first's own version
                                       "out/notes.txt": "written on the host by no run\n"}  # no run wrote it: as it is
    assert [item[0] for item in load_runs(project)[0]["withheld"]] == ["out/ckpt.pt", "out/gone.txt", "out/second.txt"]

    refused = run_offload("run", "--resume", first["run_id"], cwd=project)  # it would resume from the second's
    assert refused.returncode == 1
    assert f"run {first['run_id']}'s out/ckpt.pt was changed by run {second['run_id']} since (and 2 more)" in refused.stderr
    assert f"offload fetch {first['run_id']} --current first" in refused.stderr
    assert len(load_runs(project)) == 2  # nothing ran

    own = run_offload("fetch", second["run_id"], cwd=project)
    assert own.returncode == 0, own.stderr
    assert fetched(project, second) == {"out/ckpt.pt": content("out/ckpt.pt", second),
                                        "out/second.txt": content("out/second.txt", second),
                                        "out/first.txt": content("out/first.txt", first),  # untouched since: as it left it
                                        "out/notes.txt": "written on the host by no run\n"}

    current = run_offload("fetch", first["run_id"], "--current", cwd=project)
    assert current.returncode == 0, current.stderr
    assert "not fetched" not in current.stderr
    assert fetched(project, first)["out/ckpt.pt"] == content("out/ckpt.pt", second)
    assert load_runs(project)[0]["withheld"] == []  # --current took them as they are: --resume may go on

    # a run with no record (an older offload, a lost supervisor) gets the versions there now, and says so
    (Path(first["run_dir"]) / "outputs.json").unlink()
    unknown = run_offload("fetch", first["run_id"], "out/ckpt.pt", "--to", str(project / "unknown"), cwd=project)
    assert unknown.returncode == 0, unknown.stderr
    assert f"run {first['run_id']} has no record of the files it wrote" in unknown.stderr
    assert (project / "unknown" / "out" / "ckpt.pt").read_text() == content("out/ckpt.pt", second)


def test_a_file_changed_on_the_host_outside_any_run_is_withheld_too(box, project):
    run = offload_run(project, "write:out/ckpt.pt")
    ckpt = Path(run["project_dir"], "out", "ckpt.pt")
    ckpt.write_text("edited by hand\n")
    result = run_offload("fetch", "last", "out/*.pt", cwd=project)
    assert result.returncode == 3
    assert f"out/ckpt.pt was changed on the host after run {run['run_id']} wrote it" in result.stderr
    assert "no files match" not in result.stderr
    assert fetched(project, run) == {}


def test_a_run_that_wrote_nothing_records_nothing_and_gets_what_it_left(box, project):
    writer = offload_run(project, "write:out/ckpt.pt")
    idle = offload_run(project)  # wrote nothing under out/
    record = json.loads((Path(idle["run_dir"]) / "outputs.json").read_text())
    assert record["run_id"] == idle["run_id"] and record["files"] == {}
    result = run_offload("fetch", idle["run_id"], cwd=project)
    assert result.returncode == 0, result.stderr
    assert fetched(project, idle) == {"out/ckpt.pt": content("out/ckpt.pt", writer)}  # the version it left there


def test_a_run_stopped_by_offload_stop_records_its_files_with_their_digests(box, project):
    (project / "writer.py").write_text(WRITER)
    started = run_offload("run", "--detach", "writer.py", "write:out/ckpt.pt", "write:out-ft/log.txt", "sleep:300",
                          cwd=project)
    assert started.returncode == 0, started.stderr
    (meta,) = load_runs(project)
    run_dir, host = Path(meta["run_dir"]), Path(meta["project_dir"])
    assert wait_for(lambda: "done" in (run_dir / "output.log").read_text(), 30)
    assert not (run_dir / "outputs.json").exists()  # not while it runs
    stopped = run_offload("stop", "last", "--grace", "5", cwd=project)
    assert stopped.returncode == 0, stopped.stderr
    assert wait_for(lambda: json.loads((run_dir / "status.json").read_text())["state"] == "exited", 10)
    record = json.loads((run_dir / "outputs.json").read_text())  # there before the exit was
    assert sorted(record["files"]) == ["out-ft/log.txt", "out/ckpt.pt"]  # out*/ directories too
    for relpath, entry in record["files"].items():
        st = (host / relpath).stat()
        assert entry == {"sha256": sha256(host / relpath), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache = json.loads((host / ".offload" / "fetch-hashes.json").read_text())["entries"]  # fetch will not hash it again
    real = os.path.realpath(host / "out" / "ckpt.pt")
    assert cache[real][3] == record["files"]["out/ckpt.pt"]["sha256"]
    assert run_offload("fetch", "last", cwd=project).returncode == 0
    assert fetched(project, meta) == {"out/ckpt.pt": content("out/ckpt.pt", meta)}


def test_a_local_runs_file_changed_by_a_later_run_is_not_resumed_from(offload_home, project):
    first = offload_run(project, "write:out/ckpt.pt")  # no host: local runs, in this very project
    second = offload_run(project, "write:out/ckpt.pt")
    assert (Path(first["run_dir"]) / "outputs.json").exists()  # <id>/job/ on the laptop side
    refused = run_offload("run", "--resume", first["run_id"], cwd=project)
    assert refused.returncode == 1
    assert f"run {first['run_id']}'s out/ckpt.pt was changed by run {second['run_id']} since" in refused.stderr
    assert not (project / ".offload" / "runs" / first["run_id"] / "files").exists()  # nothing half put back
    assert (project / "out" / "ckpt.pt").read_text() == content("out/ckpt.pt", second)


def test_resume_puts_back_only_what_a_fetch_of_the_run_wrote(offload_home, project):
    run = offload_run(project, "write:out/ckpt.pt")  # a local run: --resume copies its files over this project
    assert run_offload("fetch", "last", cwd=project).returncode == 0
    files = project / ".offload" / "runs" / run["run_id"] / "files"
    (project / ".git" / "hooks").mkdir(parents=True)
    planted = {".git/hooks/pre-commit": "#!/bin/sh\necho pwned\n", "writer.py": "print('not the real writer')\n",
               ".offload/runs/x/meta.json": "{}\n"}  # as an older offload fetched them from a compromised host
    for relpath, text in planted.items():
        (files / relpath).parent.mkdir(parents=True, exist_ok=True)
        (files / relpath).write_text(text)
    writer = (project / "writer.py").read_text()
    for relpath, reason in ((".git/hooks/pre-commit", "offload never writes into .git/ or .offload/, nor puts back there"),
                            (".offload/runs/x/meta.json", "offload never writes into .git/ or .offload/, nor puts back there"),
                            ("writer.py", f"no fetch of run {run['run_id']} wrote it")):
        refused = run_offload("run", "--resume", "last", cwd=project)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.strip().splitlines() == [
            f"offload: error: run {run['run_id']}'s files dir holds {relpath} ({reason}): not putting any of them back "
            f"(hint: remove it from {files}, then resume again)"]
        assert not (project / ".git" / "hooks" / "pre-commit").exists() and not (project / ".offload/runs/x").exists()
        assert (project / "writer.py").read_text() == writer
        assert len(load_runs(project)) == 1  # nothing ran
        (files / relpath).unlink()

    (files.parent / "fetched.json").unlink()  # fetched by an offload that kept no record
    unrecorded = run_offload("run", "--resume", "last", cwd=project)
    assert unrecorded.returncode == 1 and f"hint: fetch them again (it records them): offload fetch {run['run_id']}" \
        in unrecorded.stderr
    again = run_offload("fetch", "last", cwd=project)
    assert again.returncode == 0 and "nothing to transfer" in again.stderr  # recorded as it verified them
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    (project / "out").rename(project.parent / "out-aside")
    (project / "out").symlink_to(elsewhere)  # made a link out of the project since: not copied through
    through = run_offload("run", "--resume", "last", cwd=project)
    assert through.returncode == 1 and f"{project / 'out'} leads to {elsewhere}, outside {project}" in through.stderr
    assert list(elsewhere.iterdir()) == [] and len(load_runs(project)) == 1
    (project / "out").unlink()
    (project.parent / "out-aside").rename(project / "out")
    resumed = run_offload("run", "--resume", "last", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert len(load_runs(project)) == 2
    assert (project / "out" / "ckpt.pt").read_text() == content("out/ckpt.pt", load_runs(project)[1])


# --- the pure parts, on real files and plain records ------------------------------------------------

def test_the_snapshot_diff_finds_what_changed_under_out_dirs_and_nothing_else(tmp_path):
    root = tmp_path / "proj"
    for relpath in ("out/a.pt", "out/sub/b.pt", "out/same.pt", "out/replaced.pt", "out-ft/c.txt",
                    "data/d.bin", "outfile.txt", "out/.e.pt.offload-part", ".offload/runs/x/output.log"):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(relpath)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "big.bin").write_text("not the project's")
    (root / "out" / "link").symlink_to(tmp_path / "elsewhere")  # never followed
    (root / "outputs").symlink_to(tmp_path / "elsewhere")
    before = outputs.scan(str(root))
    assert sorted(before) == ["out-ft/c.txt", "out/a.pt", "out/replaced.pt", "out/same.pt", "out/sub/b.pt"]

    (root / "out" / "a.pt").write_text("out/a.pX")  # same size
    os.utime(root / "out" / "a.pt", ns=(before["out/a.pt"][1] + 1,) * 2)  # a tick later
    (root / "out" / "sub" / "b.pt").unlink()
    (root / "out-ft" / "new.txt").write_text("new")
    stamp = (root / "out" / "replaced.pt").stat().st_mtime_ns
    (root / "replacement").write_text("out/replaced.pX")  # same size, same mtime, another inode
    os.utime(root / "replacement", ns=(stamp, stamp))
    os.replace(root / "replacement", root / "out" / "replaced.pt")
    (root / "data" / "d.bin").write_text("changed, but not under out*/")
    (root / "out" / ".f.pt.offload-part").write_text("a fetch's")

    changed, deleted = outputs.diff(before, outputs.scan(str(root)))
    assert changed == ["out-ft/new.txt", "out/a.pt", "out/replaced.pt"]
    assert deleted == ["out/sub/b.pt"]
    assert outputs.diff(before, before) == ([], [])


def test_the_record_of_a_run_holds_the_digests_of_what_it_wrote(tmp_path):
    root, run_dir = tmp_path / "proj", tmp_path / "proj" / ".offload" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (root / "out").mkdir()
    (root / "out" / "kept.txt").write_text("kept")
    (root / "out" / "old.txt").write_text("old")
    before = outputs.snapshot(str(root))
    (root / "out" / "ckpt.pt").write_bytes(b"\1" * 3000)
    (root / "out" / "old.txt").unlink()
    outputs.record(str(run_dir), "r1", before)
    record = json.loads((run_dir / "outputs.json").read_text())
    st = (root / "out" / "ckpt.pt").stat()
    assert record["run_id"] == "r1" and abs(record["ended_at"] - time.time()) < 60
    assert record["files"] == {"out/ckpt.pt": {"sha256": hashlib.sha256(b"\1" * 3000).hexdigest(), "size": 3000,
                                               "mtime_ns": st.st_mtime_ns},
                               "out/old.txt": {"deleted": True}}
    assert list(run_dir.iterdir()) == [run_dir / "outputs.json"]  # no temp file left


def test_own_versions_lists_the_runs_and_names_the_later_run_for_the_rest():
    def written(run, *names):
        return {name: {"sha256": f"{name}@{run}", "size": 1, "mtime_ns": 1} for name in names}

    a = {"run_id": "a", "ended_at": 10.0, "files": {**written("a", "out/1", "out/2", "out/3", "out/4"),
                                                    "out/gone": {"deleted": True}}}
    b = {"run_id": "b", "ended_at": 20.0, "files": {**written("b", "out/2", "out/5"), "out/3": {"deleted": True}}}
    c = {"run_id": "c", "ended_at": 30.0, "files": written("c", "out/2")}
    earlier = {"run_id": "z", "ended_at": 5.0, "files": written("z", "out/4", "out/6")}
    present = {"out/1": "out/1@a",    # a's own
               "out/2": "out/2@b",    # changed by c, then back to b's: b is the newest whose version it is
               "out/4": "edited",     # changed by no run a knows of
               "out/5": "out/5@b",    # a did not write it, b did after a
               "out/6": "out/6@z",    # written before a by z, untouched since a: what a left
               "out/7": "synced"}     # no run wrote it
    listed, withheld = outputs.own_versions(a, [c, b, earlier], present, lambda path: path.startswith("out/"))
    assert listed == ["out/1", "out/6", "out/7"]
    assert withheld == [Withheld("out/2", CHANGED, "b"), Withheld("out/4", CHANGED, None),
                        Withheld("out/5", NEWER, "b"), Withheld("out/3", DELETED, "b")]
    assert outputs.own_versions(a, [c, b], present, lambda path: False)[1][-1] == Withheld("out/5", NEWER, "b")
    assert outputs.own_versions(c, [b, a], present, lambda path: True) == (
        ["out/1", "out/4", "out/5", "out/6", "out/7"], [Withheld("out/2", CHANGED, None)])


def test_a_gone_file_is_selected_by_the_patterns_as_if_it_were_there():
    from remote_agent.fetching import matches, pattern_parts

    def selects(pattern, path):
        return matches(pattern_parts(pattern), path.split("/"))

    assert selects("out/**", "out/deep/ckpt.pt") and selects("out", "out/ckpt.pt") and selects("**/*.pt", "out/a/b.pt")
    assert selects("out/*.pt", "out/.hidden.pt") and selects("./out/ckpt.pt", "out/ckpt.pt")
    assert not selects("out/*.pt", "out/deep/ckpt.pt") and not selects("out-ft/**", "out/ckpt.pt")
    assert not selects("out/ckpt.pt", "out/ckpt.pth")
