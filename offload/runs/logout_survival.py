"""What a host said about a job and logout (remote_agent/logind.py), put into words on the laptop.

Where logind has KillUserProcesses=yes, the job dies with the SSH session that started it; the host starts it in
a systemd scope of the user's own where that helps, and otherwise says why not and what fixes it.
"""
from __future__ import annotations

COLUMN = "survives logout"  # of `hosts check`


def describe(facts: dict) -> str:
    """The `hosts check` cell: yes, yes in a scope, or no with the reason and the fix."""
    survival = facts.get("logout_survival") or {}
    plan = survival.get("plan")
    if plan == "fine":
        return "yes"
    if plan == "scope":
        return "yes (each run in a systemd scope of its own)"
    if plan == "warn":
        return f"no: {survival.get('message')}"
    return "?"


def detach_warning(facts: dict, host: str) -> str | None:
    """The line said before `offload run --detach` on a host that would end the run as offload disconnects."""
    survival = facts.get("logout_survival") or {}
    if survival.get("plan") != "warn":
        return None
    return (f"warning: {host} ends this run when the SSH session that starts it closes, which --detach does at "
            f"once: {survival.get('message')}")
