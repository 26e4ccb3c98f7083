"""What the laptop holds of the host's last manifest of a project, for as long as its link to that agent lives:
the agent then answers `manifest_same` instead of sending it again (remote_agent/manifest_memo.py), and a
no-op plan made from the very same entries and manifest is not made again.
"""
from __future__ import annotations

from dataclasses import dataclass

FIELDS = ("present", "synced", "changed", "refused", "stage")  # what the memo's token stands for


@dataclass
class Known:
    token: str
    fields: dict
    entries: list | None = None  # the entries (that very list) and force of the no-op plan below
    force: bool = False
    plan: object = None


def memo(agent) -> dict:
    """(workdir, project) -> Known, kept on the link's AgentClient: it goes when the link (and agent) does."""
    return agent.known_manifests


def known_token(agent, key: tuple) -> str | None:
    known = memo(agent).get(key)
    return known.token if known is not None else None


def completed(agent, key: tuple, reply: dict) -> dict:
    """The `prepared` reply with the manifest in it: the one held already where the agent says it is the same."""
    same = reply.get("manifest_same")
    known = memo(agent).get(key)
    if same is not None and known is not None and known.token == same:
        return {**reply, **known.fields, "manifest_token": same}
    memo(agent).pop(key, None)
    if reply.get("manifest_token") is not None:
        memo(agent)[key] = Known(reply["manifest_token"], {name: reply.get(name) for name in FIELDS})
    return reply


def planned(agent, key: tuple, entries: list, manifest: dict, force: bool, make_plan):
    """make_plan(), unless the last one for these very entries and this manifest was a no-op: that one again.
    A plan that changes anything changes the host's manifest too, so only a no-op can come up twice."""
    known = memo(agent).get(key)
    fits = known is not None and known.token == manifest.get("manifest_token")
    if fits and known.plan is not None and known.entries is entries and known.force == force:
        return known.plan
    plan = make_plan()
    if fits and not (plan.send or plan.delete or plan.forget or plan.adopt):
        known.entries, known.force, known.plan = entries, force, plan
    return plan
