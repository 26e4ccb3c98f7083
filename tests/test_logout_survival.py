"""Runs that outlive logout on systemd hosts (remote_agent/logind.py): the decision, on recorded real `loginctl` and
`systemd-run` outputs (tests/data/logind/, see its README), what the laptop says of it, and, on this machine (no
systemd running), a supervisor started exactly as before.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from offload.runs.logout_survival import describe, detach_warning
from procs import alive, local_agent  # noqa: F401 - local_agent is a fixture
from remote_agent.jobs import supervisor_argv
from remote_agent.logind import SCOPE_PREFIX, logout_survival, plan_survival, read_facts
from sshd_server import wait_for

RECORDED = Path(__file__).parent / "data" / "logind"


def recorded(name: str) -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())


@pytest.mark.parametrize("name", [
    "debian12-container-no-systemd",  # loginctl there, logind not: "System has not been booted with systemd ..."
    "no-loginctl",
    "no-kill-debian-default",         # KillUserProcesses=no, as Debian and Ubuntu ship it
    "kill-outside-any-session",       # sshd without pam_systemd: no session scope to end
    "kill-root-excluded",             # KillExcludeUsers=root, logind's default
    "kill-only-other-users",          # KillOnlyUsers names others
])
def test_where_nothing_kills_at_logout_the_supervisor_starts_as_always(name):
    assert plan_survival(recorded(name)) == ("fine", None)
    assert supervisor_argv("/w/run", []) == [sys.executable, "-m", "remote_agent.supervisor", "/w/run"]


def test_kill_user_processes_without_linger_warns_with_the_fix():
    plan, message = plan_survival(recorded("kill-no-linger"))
    assert plan == "warn"
    assert message == ("logind has KillUserProcesses=yes and alice does not linger; "
                       "fix: run `loginctl enable-linger alice` on the host")


def test_a_lingering_user_gets_the_supervisor_a_scope_of_its_own():
    plan, prefix = plan_survival(recorded("kill-linger-scope-works"))
    assert (plan, prefix) == ("scope", ["systemd-run", "--user", "--scope", "--quiet", "--collect", "--"])
    assert supervisor_argv("/w/run", prefix) == [*SCOPE_PREFIX, sys.executable, "-m", "remote_agent.supervisor",
                                                "/w/run"]


@pytest.mark.parametrize("name, failure", [
    ("kill-linger-no-medium", "Failed to connect to bus: No medium found"),
    ("kill-linger-runtime-dir-not-defined", "Failed to connect to bus: $DBUS_SESSION_BUS_ADDRESS and $XDG_RUNTIME_DIR "
                                            "not defined (consider using --machine=<user>@.host --user to connect to bus "
                                            "of other user)"),
])
def test_a_scope_that_cannot_start_is_a_warning_in_systemd_runs_words(name, failure):
    plan, message = plan_survival(recorded(name))
    assert plan == "warn"
    assert f"`systemd-run --user --scope` fails ({failure}); fix: " in message
    assert "KillUserProcesses=no" in message


def test_hosts_check_and_run_detach_say_it_with_the_fix():
    cells, warnings = {}, {}
    for name in ("no-kill-debian-default", "kill-linger-scope-works", "kill-no-linger"):
        facts = {"logout_survival": logout_survival(recorded(name))}
        cells[name], warnings[name] = describe(facts), detach_warning(facts, "box")
    assert cells == {"no-kill-debian-default": "yes",
                     "kill-linger-scope-works": "yes (each run in a systemd scope of its own)",
                     "kill-no-linger": "no: logind has KillUserProcesses=yes and alice does not linger; "
                                       "fix: run `loginctl enable-linger alice` on the host"}
    assert warnings["no-kill-debian-default"] is None and warnings["kill-linger-scope-works"] is None
    assert warnings["kill-no-linger"] == (
        "warning: box ends this run when the SSH session that starts it closes, which --detach does at once: "
        "logind has KillUserProcesses=yes and alice does not linger; fix: run `loginctl enable-linger alice` on the host")
    assert describe({}) == "?"  # a host that did not say


def test_on_this_machine_a_job_starts_as_before_in_the_agents_own_cgroup(local_agent, tmp_path):
    """No systemd runs here: the supervisor is the plain command, a child of the agent, in the agent's cgroup
    (a scope would have moved it into one of its own)."""
    plan, _ = plan_survival(read_facts())
    run_dir = tmp_path / "run"
    started = local_agent.request("start", run_dir=str(run_dir), cwd=str(tmp_path), argv=["sleep", "60"], env={})
    try:
        assert started["state"] == "running"
        supervisor = started["supervisor_pid"]
        cmdline = Path(f"/proc/{supervisor}/cmdline").read_bytes().split(b"\0")[:-1]
        assert cmdline == [os.fsencode(local_agent.hello["python"]), b"-m", b"remote_agent.supervisor",
                           os.fsencode(str(run_dir))]
        parent = int(Path(f"/proc/{supervisor}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert parent == local_agent.hello["pid"]
        same_cgroup = (Path(f"/proc/{supervisor}/cgroup").read_text()
                       == Path(f"/proc/{local_agent.hello['pid']}/cgroup").read_text())
        assert same_cgroup == (plan != "scope"), plan
    finally:
        stopped = local_agent.request("stop", run_dir=str(run_dir), grace=1)
        assert stopped["state"] == "exited"
        assert wait_for(lambda: not alive(started["supervisor_pid"]), 10)
