"""Whether a detached job outlives the SSH session that started it, and how to start it so that it does.

systemd-logind ends a session's scope, and every process in it, when the session closes if the host says
KillUserProcesses=yes for that user (logind.conf(5); KillExcludeUsers, root by default, and KillOnlyUsers narrow
it). A new process session (start_new_session) does not leave that scope. A transient scope of the user's own
systemd manager (`systemd-run --user --scope`) does; it lives as long as the manager, which outlives the last
logout only when the user lingers (`loginctl enable-linger`). So: nothing kills at logout, start as always; it
kills and the user lingers, start in a scope; it kills and nothing helps, say so with the fix.

Every fact comes from /proc/self/cgroup or a command with a short timeout, each read only where the answer turns
on it. A command that is missing or fails means no logind, and no logind kills nothing.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess

COMMAND_TIMEOUT_S = 5
# `show-session` without a session shows logind's own (the manager's) properties
SHOW_MANAGER = ["loginctl", "show-session", "-p", "KillUserProcesses", "-p", "KillOnlyUsers", "-p", "KillExcludeUsers"]
SCOPE_PREFIX = ["systemd-run", "--user", "--scope", "--quiet", "--collect", "--"]
OWN_CGROUP = "/proc/self/cgroup"
SESSION_SCOPE = re.compile(r"/session-[^/\s]+\.scope$", re.MULTILINE)  # .../user-1000.slice/session-3.scope


def run_command(argv: list, env: dict | None = None) -> dict:
    """{"argv", "rc", "stdout", "stderr"} of a command; rc None where it is not installed or does not answer."""
    if shutil.which(argv[0]) is None:
        return {"argv": argv, "rc": None, "stdout": "", "stderr": f"{argv[0]}: not installed"}
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"argv": argv, "rc": None, "stdout": "", "stderr": str(exc)}
    return {"argv": argv, "rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers): logind knows it by number
        return str(os.getuid())


def user_bus_env() -> dict:
    """The environment `systemd-run --user` finds the user's manager in. An SSH session that pam_systemd did not
    set up has no XDG_RUNTIME_DIR, though the manager listens in /run/user/UID all the same."""
    env = dict(os.environ)
    runtime_dir = f"/run/user/{os.getuid()}"
    if not env.get("XDG_RUNTIME_DIR") and os.path.isdir(runtime_dir):
        env["XDG_RUNTIME_DIR"] = runtime_dir
    return env


def read_facts() -> dict:
    """What plan_survival decides on, for the user this agent runs as. Each command runs only where the answer
    turns on it, so a host whose logind kills nothing (or that has none) pays one `loginctl`; the scope is tried,
    with a `true` in one, only where it would be used."""
    user = user_name()
    facts = {"user": user, "manager": run_command(SHOW_MANAGER), "cgroup": None, "linger": None, "scope": None}
    if kill_applies(facts):
        facts["cgroup"] = read_cgroup()
        if killed_at_logout(facts):
            facts["linger"] = run_command(["loginctl", "show-user", user, "-p", "Linger"])
            if lingers(facts):
                facts["scope"] = run_command([*SCOPE_PREFIX, "true"], env=user_bus_env())
    return facts


def read_cgroup() -> str | None:
    try:
        with open(OWN_CGROUP) as f:
            return f.read()
    except OSError:
        return None


def parse_properties(text: str) -> dict:
    """`loginctl show-*` output: one NAME=VALUE a line."""
    properties = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            properties[name.strip()] = value.strip()
    return properties


def kill_applies(facts: dict) -> bool:
    """Whether logind's KillUserProcesses=yes holds for this user (no logind answering: it does not)."""
    manager = facts["manager"]
    if manager.get("rc") != 0:
        return False
    properties = parse_properties(manager.get("stdout", ""))
    if properties.get("KillUserProcesses") != "yes":
        return False
    user = facts["user"]
    if user in properties.get("KillExcludeUsers", "").split():
        return False
    only = properties.get("KillOnlyUsers", "").split()
    return not only or user in only


def killed_at_logout(facts: dict) -> bool:
    """Whether what this agent starts dies when its SSH session closes: KillUserProcesses applies, and the agent
    is in a session's scope (under sshd without pam_systemd it is in sshd's own cgroup, which no logout ends)."""
    return kill_applies(facts) and bool(SESSION_SCOPE.search(facts.get("cgroup") or ""))


def lingers(facts: dict) -> bool:
    linger = facts.get("linger") or {}
    return linger.get("rc") == 0 and parse_properties(linger.get("stdout", "")).get("Linger") == "yes"


def plan_survival(facts: dict) -> tuple:
    """("scope", the argv prefix that starts the supervisor in a scope of the user's manager), ("warn", why a
    detached job dies at logout, with the fix), or ("fine", None): nothing kills it; it starts as it always has."""
    if not killed_at_logout(facts):
        return "fine", None
    user = facts["user"]
    if not lingers(facts):
        return "warn", (f"logind has KillUserProcesses=yes and {user} does not linger; "
                        f"fix: run `loginctl enable-linger {user}` on the host")
    scope = facts.get("scope") or {}
    if scope.get("rc") == 0:
        return "scope", list(SCOPE_PREFIX)
    failure = next((line.strip() for line in scope.get("stderr", "").splitlines() if line.strip()), "not tried")
    return "warn", (f"logind has KillUserProcesses=yes and `systemd-run --user --scope` fails ({failure}); "
                    f"fix: make `systemd-run --user --scope true` work for {user} on the host (`systemctl --user "
                    "status` says why not), or set KillUserProcesses=no in its /etc/systemd/logind.conf")


def logout_survival(facts: dict | None = None) -> dict:
    """For the laptop: the plan for a job started now (on this host's facts, unless given), and, where the job
    would die at logout, why and the fix."""
    plan, detail = plan_survival(read_facts() if facts is None else facts)
    return {"plan": plan, "message": detail if plan == "warn" else None}
