"""`offload run` end to end against a real sshd: arguments, exit codes, output, records, launch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import HOLD, fill_disk, register_host, run_offload, small_disk_at, start_offload
from offload.runs import job as runner
from offload.runs.nodes import RemoteNode
from offload.config.hosts import load
from offload.config.resolve import resolve
from offload.runs.record import load_runs
from pipe_reads import read_line_within, read_rest_within
from procs import alive, processes_mentioning
from sshd_server import wait_for

NASTY_ARGS = ["a b", "", "'single'", '"double"', "$(touch /tmp/offload-pwned)", "; rm -rf x", "*", "~", "\\",
              "über ünïcödé 日本", "--device=cpu", "-x", "--", "line\nbreak", "tab\there", "$HOME", "`id`"]


def run_records(project: Path) -> list:
    return sorted((project / ".offload" / "runs").iterdir())


def stop_leftover_jobs(project: Path) -> None:
    """A failed test must not leave its detached job running: SIGKILL the process group of any still alive."""
    for status_file in project.glob(".offload/runs/*/job/status.json"):
        pgid = json.loads(status_file.read_text()).get("pgid")
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def last_report(result) -> dict:
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


STEADY = "import time\nfor i in range(30):\n    print('tick', i, flush=True)\n    time.sleep(0.1)\n"


def host_log(project: Path) -> bytes:
    meta = json.loads((run_records(project)[-1] / "meta.json").read_text())
    status_file = Path(meta["run_dir"]) / "status.json"  # the host's run directory (a local path here)
    assert wait_for(lambda: json.loads(status_file.read_text()).get("state") == "exited", 20)
    assert json.loads(status_file.read_text())["exit_code"] == 0
    return (Path(meta["run_dir"]) / "output.log").read_bytes()


def test_arguments_reach_the_script_byte_for_byte(box, project):
    result = run_offload("run", "report.py", *NASTY_ARGS, cwd=project)
    assert result.returncode == 0, result.stderr
    assert last_report(result)["argv"] == NASTY_ARGS
    assert not Path("/tmp/offload-pwned").exists()


def test_script_runs_in_the_synced_project_root_with_the_job_environment(box, project, offload_home):
    result = run_offload("run", "report.py", cwd=project)
    report = last_report(result)
    records = run_records(project)
    assert len(records) == 1
    run_id = records[0].name
    assert Path(report["cwd"]).parent == Path(box["workdir"])
    assert Path(report["cwd"]).name.startswith("proj-")
    assert report["env"]["OFFLOAD_RUN_ID"] == run_id
    assert report["env"]["PYTHONUNBUFFERED"] == "1"


def test_host_env_applies(offload_home, sshd, project):
    register_host(offload_home, sshd, env={"OFFLOAD_TEST_ENV": "from hosts.yaml"})
    assert last_report(run_offload("run", "report.py", cwd=project))["env"]["OFFLOAD_TEST_ENV"] == "from hosts.yaml"


@pytest.mark.parametrize("code", [0, 1, 3, 42])
def test_exit_code_is_the_scripts(box, project, code):
    (project / "exit.py").write_text(f"import sys; print('bye'); sys.exit({code})\n")
    result = run_offload("run", "exit.py", cwd=project)
    assert result.returncode == code
    meta = json.loads((run_records(project)[-1] / "meta.json").read_text())
    assert meta["exit_code"] == code


def test_killed_by_a_signal_exits_128_plus_signal(box, project):
    (project / "die.py").write_text("import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n")
    result = run_offload("run", "die.py", cwd=project)
    assert result.returncode == 128 + signal.SIGKILL
    assert "SIGKILL" in result.stderr


def test_output_is_kept_locally_with_meta(box, project):
    (project / "talk.py").write_text("import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nprint('again')\n")
    result = run_offload("run", "talk.py", "--flag=1", cwd=project)
    assert result.returncode == 0
    record = run_records(project)[-1]
    assert (record / "output.log").read_text() == "to stdout\nto stderr\nagain\n"  # in order, both streams
    assert result.stdout == "to stdout\nto stderr\nagain\n"
    meta = json.loads((record / "meta.json").read_text())
    assert meta["run_id"] == record.name
    assert meta["host"] == "box" and meta["fallback"] is False
    assert meta["argv"][1:] == ["talk.py", "--flag=1"]
    assert meta["started_at"] and meta["ended_at"] and meta["exit_code"] == 0


def test_output_streams_live(box, project, tmp_path):
    """A line printed by the job reaches the laptop while the job is still running."""
    go = tmp_path / "go"
    (project / "wait.py").write_text(
        "import os, sys, time\nprint('first line', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\nprint('second line')\n")
    proc = start_offload("run", "wait.py", cwd=project, stderr=subprocess.DEVNULL)
    try:
        assert read_line_within(proc.stdout) == b"first line\n"
        assert proc.poll() is None  # the job is still waiting for us: the line came live
        go.touch()
        assert read_rest_within(proc.stdout) == b"second line\n"
        assert proc.wait(timeout=20) == 0
    finally:
        go.touch()  # whatever failed, the detached job on the host gets to finish
        proc.kill()
        proc.wait(timeout=10)


def test_several_processes_launch_through_torchrun(offload_home, sshd, project):
    register_host(offload_home, sshd, gpus=2)
    (project / "ranks.py").write_text(
        "import os\n"  # one write per line: ranks share the log, and print() of several values writes each apart
        "os.write(1, f\"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} local {os.environ['LOCAL_RANK']}\\n\".encode())\n")
    result = run_offload("run", "ranks.py", cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(line for line in result.stdout.splitlines() if line.startswith("rank")) == \
        ["rank 0 of 2 local 0", "rank 1 of 2 local 1"]
    meta = json.loads((run_records(project)[-1] / "meta.json").read_text())
    assert meta["argv"][1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def test_nproc_per_node_flag_overrides_the_hosts_gpus(offload_home, sshd, project):
    register_host(offload_home, sshd, gpus=2)
    result = run_offload("run", "--nproc-per-node", "1", "report.py", cwd=project)
    assert result.returncode == 0
    meta = json.loads((run_records(project)[-1] / "meta.json").read_text())
    assert meta["argv"][1:] == ["report.py"]


RANK_REPORT = (  # each torchrun rank writes its own file: the ranks share one output log
    "import json, os, sys\n"
    "with open(f\"argv-{os.environ['OFFLOAD_RUN_ID']}-rank{os.environ['RANK']}.json\", 'w') as f:\n"
    "    json.dump({'rank': int(os.environ['RANK']), 'argv': sys.argv[1:]}, f)\n")


@pytest.fixture
def open_link(box, project):
    """One connection and one agent for many runs (the hypothesis tests below)."""
    from offload.sync.push import sync_project
    from offload.transport.link import Link

    (project / "rank_report.py").write_text(RANK_REPORT)
    target = resolve("box", load().get("box"))
    link = Link(target).open()
    yield link, sync_project(link.agent, project, target.workdir).project_dir
    link.close()


ARGV_LISTS = st.lists(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))),
                      max_size=6)


def launch_once(link, project: Path, remote_project_dir: str, script: str, args: list, nproc: int) -> Path:
    """One job through the real launch path; its new run record."""
    before = set(run_records(project)) if (project / ".offload" / "runs").exists() else set()
    node = RemoteNode(0, link.target, link)
    node.project_dir = remote_project_dir
    options = runner.RunOptions(script=script, args=args, nproc_per_node=nproc)
    assert runner.launch_and_follow(runner.Job(options, project, script, [node])) == 0
    (record,) = set(run_records(project)) - before
    return record


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ARGV_LISTS)
def test_random_argv_arrives_exactly(open_link, project, args):
    link, remote_project_dir = open_link
    record = launch_once(link, project, remote_project_dir, "report.py", args, 1)
    report = json.loads((record / "output.log").read_text())
    assert report["argv"] == args


# torchrun starts in ~2 s on a busy CPU: a few examples, plus the arguments torchrun's own parser could take
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ARGV_LISTS)
@example(["--", "--nproc_per_node=3", "-m", "x y", ""])  # argparse drops a `--` first after torchrun's script
def test_random_argv_arrives_exactly_at_every_torchrun_rank(open_link, project, args):
    link, remote_project_dir = open_link
    record = launch_once(link, project, remote_project_dir, "rank_report.py", args, 2)
    assert json.loads((record / "meta.json").read_text())["argv"][1:3] == ["-m", "torch.distributed.run"]
    reports = sorted(Path(remote_project_dir).glob(f"argv-{record.name}-rank*.json"))
    assert [json.loads(path.read_text()) for path in reports] == [{"rank": 0, "argv": args}, {"rank": 1, "argv": args}]


def test_ctrl_c_detaches_and_the_remote_run_goes_on(box, project, tmp_path):
    (project / "slow.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(2)\nprint('finished')\n")
    proc = start_offload("run", "slow.py", cwd=project)
    try:
        assert read_line_within(proc.stdout) == b"started\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert b"detached" in read_rest_within(proc.stderr)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert host_log(project) == b"started\nfinished\n"  # the run went on, exited 0, and its log is whole


def test_ctrl_c_stops_a_local_run(offload_home, project):
    (project / "forever.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    proc = start_offload("run", "forever.py", cwd=project)
    try:
        assert read_line_within(proc.stdout) == b"started\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait(timeout=10)
        stop_leftover_jobs(project)
    record = run_records(project)[-1]
    status = json.loads((record / "job" / "status.json").read_text())
    assert status["signal"] == "SIGTERM"
    assert not os.path.exists(f"/proc/{status['pid']}")  # the supervisor reaped it


def test_a_dropped_link_is_reconnected_and_the_log_ends_byte_identical(offload_home, fresh_sshd, project):
    register_host(offload_home, fresh_sshd)
    (project / "steady.py").write_text(STEADY)
    proc = start_offload("run", "steady.py", cwd=project)
    try:
        assert read_line_within(proc.stdout) == b"tick 0\n"
        assert fresh_sshd.kill_connections()  # the sshd process serving the laptop dies: the link drops
        assert proc.wait(timeout=60) == 0
        stderr = read_rest_within(proc.stderr).decode()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert stderr.count("lost the link to box") == 1 and stderr.count("reconnected to box") == 1, stderr
    local = (run_records(project)[-1] / "output.log").read_bytes()
    assert local == host_log(project)
    assert local == "".join(f"tick {i}\n" for i in range(30)).encode()  # no line lost or repeated


def test_when_reconnecting_gives_up_logs_f_picks_the_run_up_again(offload_home, fresh_sshd, project):
    register_host(offload_home, fresh_sshd)
    (project / "steady.py").write_text(STEADY)
    proc = start_offload("run", "--reconnect-for", "0", "steady.py", cwd=project)
    try:
        assert read_line_within(proc.stdout) == b"tick 0\n"
        assert fresh_sshd.kill_connections()
        assert proc.wait(timeout=30) != 0
        assert b"lost the link" in read_rest_within(proc.stderr)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    followed = run_offload("logs", "last", "-f", cwd=project, timeout=60)
    assert followed.returncode == 0, followed.stderr
    local = (run_records(project)[-1] / "output.log").read_bytes()
    assert local == host_log(project) == followed.stdout.encode()
    meta = json.loads((run_records(project)[-1] / "meta.json").read_text())
    assert meta["exit_code"] == 0 and meta["ended_at"]


def test_an_outage_of_some_seconds_is_ridden_out_with_backoff(offload_home, fresh_sshd, project):
    """The host stops answering at all (its sshd frozen: no banner for anyone) for ~3 s, then comes back."""
    register_host(offload_home, fresh_sshd)
    (project / "steady.py").write_text(STEADY)
    proc = start_offload("run", "--connect-timeout", "1", "steady.py", cwd=project)
    try:
        assert read_line_within(proc.stdout) == b"tick 0\n"
        os.kill(fresh_sshd.pid, signal.SIGSTOP)
        try:
            assert fresh_sshd.kill_connections()
            time.sleep(3)
        finally:
            os.kill(fresh_sshd.pid, signal.SIGCONT)
        code = proc.wait(timeout=60)
        stderr = read_rest_within(proc.stderr).decode()
        assert code == 0, stderr
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert stderr.count("lost the link to box") == 1, stderr
    (reconnected,) = [line for line in stderr.splitlines() if "reconnected to box after" in line]
    assert float(reconnected.split("after ")[1].split(" s")[0]) >= 2.5
    assert (run_records(project)[-1] / "output.log").read_bytes() == host_log(project)


def host_project_dir(workdir: str, project: Path) -> Path:
    (project_dir,) = [p for p in Path(workdir).iterdir() if p.name.startswith(f"{project.name}-")]
    return project_dir


def wait_host_exited(meta: dict) -> None:
    status_file = Path(meta["run_dir"]) / "status.json"
    assert wait_for(lambda: json.loads(status_file.read_text()).get("state") == "exited", 30)


def test_two_registrations_of_one_box_with_two_workdirs_run_one_job_at_a_time(offload_home, sshd, project, tmp_path):
    first = register_host(offload_home, sshd, "box-a")
    second = register_host(offload_home, sshd, "box-b")  # the same account on the same box, another workdir
    assert first["workdir"] != second["workdir"]
    (project / "hold.py").write_text(HOLD)
    release = tmp_path / "release"
    try:
        assert run_offload("run", "--host", "box-a", "--detach", "hold.py", str(release), cwd=project).returncode == 0
        holder = load_runs(project)[-1]
        busy = run_offload("run", "--host", "box-b", "--no-wait", "report.py", cwd=project)
        assert busy.returncode == 75, busy.stderr
        assert f"box-b is busy: run {holder['run_id']}" in busy.stderr and busy.stdout == ""
    finally:
        release.touch()
    wait_host_exited(holder)
    assert run_offload("run", "--host", "box-b", "--no-wait", "report.py", cwd=project).returncode == 0  # free again


def test_a_job_whose_supervisor_was_killed_holds_the_host_until_offload_stop_ends_it(box, project, tmp_path):
    (project / "hold.py").write_text(HOLD)
    release = tmp_path / "release"
    other = tmp_path / "other"  # another project: only the host's lock stands between its run and the job
    other.mkdir()
    (other / "report.py").write_text((project / "report.py").read_text())
    try:
        assert run_offload("run", "--detach", "hold.py", str(release), cwd=project).returncode == 0
        (meta,) = load_runs(project)
        status = json.loads((Path(meta["run_dir"]) / "status.json").read_text())
        os.kill(status["supervisor_pid"], signal.SIGKILL)
        assert wait_for(lambda: not alive(status["supervisor_pid"]), 5) and alive(status["pid"])

        busy = run_offload("run", "--no-wait", "report.py", cwd=other)
        assert busy.returncode == 75, busy.stderr
        assert f"box is busy: run {meta['run_id']}" in busy.stderr
        assert run_offload("status", "last", cwd=project).stdout == \
            f"{meta['run_id']} on box: lost (its supervisor died without recording an exit)\n"

        stopped = run_offload("stop", "last", "--grace", "2", cwd=project)
        assert stopped.returncode == 0, stopped.stderr
        assert f"sent SIGTERM to run {meta['run_id']}'s process group on box; it has ended" in stopped.stderr
        assert wait_for(lambda: not alive(status["pid"]), 5)
        assert run_offload("run", "--no-wait", "report.py", cwd=other).returncode == 0  # the host is free
    finally:
        release.touch()
        for meta in load_runs(project):  # whatever failed, the job goes, by its recorded group
            status = json.loads((Path(meta["run_dir"]) / "status.json").read_text())
            if status.get("pgid") and alive(status["pgid"]):
                os.killpg(status["pgid"], signal.SIGKILL)


def test_a_supervisor_that_cannot_record_its_run_fails_it_in_one_line(box, project, tmp_path):
    holder_project = tmp_path / "holder"
    holder_project.mkdir()
    (holder_project / "hold.py").write_text(HOLD)
    release = tmp_path / "release"
    (project / "job.py").write_text("import time\ntime.sleep(300)\n")
    token = f"job-{tmp_path.name}"
    assert run_offload("sync", cwd=project).returncode == 0
    runs_dir = host_project_dir(box["workdir"], project) / ".offload" / "runs"
    waiting = None
    with small_disk_at(runs_dir, "256k"):  # the run's directory on the host is on a disk about to be full
        try:
            assert run_offload("run", "--detach", "hold.py", str(release), cwd=holder_project).returncode == 0
            waiting = start_offload("run", "job.py", token, cwd=project)
            assert wait_for(lambda: any(json.loads(status.read_text()).get("state") == "waiting"
                                        for status in runs_dir.glob("*/status.json")), 30)
            fill_disk(runs_dir)
            release.touch()  # the holder ends: the waiting run takes the host and cannot record that it runs
            assert waiting.wait(timeout=60) == 1
            assert wait_for(lambda: processes_mentioning(token) == [], 10)  # stopped, not left running unlocked
            stderr = waiting.stderr.read().decode()
            status = run_offload("status", "last", cwd=project)
            logs = run_offload("logs", "last", cwd=project)
        finally:
            release.touch()
            if waiting is not None:
                waiting.kill()
                waiting.wait()
            for pid in processes_mentioning(token):
                os.kill(pid, signal.SIGKILL)
    (run_id,) = [meta["run_id"] for meta in load_runs(project)]
    error = (f"the supervisor failed: cannot record the run's status: No space left on device "
             f"({host_project_dir(box['workdir'], project)}/.offload/runs/{run_id}/status.json); its job was stopped")
    said = f"offload: run {run_id} failed on box: {error} (fix that, then run again)\n"
    assert said in stderr and "Traceback" not in stderr, stderr
    assert status.stdout == f"{run_id} on box: failed: {error}\n"
    assert logs.returncode == 0 and logs.stderr == said
    assert load_runs(project)[0]["exit_code"] == 1
