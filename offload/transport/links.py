"""Links to hosts for one command, or kept between commands inside the link keeper.

`open_link` is what a command uses: in a normal process it connects and closes afterwards; inside the
keeper (after `keep_links()`) it reuses the open link to the same target, checked with one round trip,
and keeps it for the next command. A link is only kept when the command that used it ended cleanly or
with an error the agent reported: after anything else the stream may be mid-message, so it is closed.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from offload.errors import LinkLost, OffloadError
from offload.transport.link import Link

_kept: dict | None = None  # target (connection fields) -> Link; None outside the keeper
_active: list = []  # the link a command is using now, for abort_active()
_lock = threading.Lock()
_aborted = threading.Event()  # the command's client went away: no link is opened or used for it any more


def keep_links() -> None:
    global _kept
    _kept = {}


def link_key(target) -> tuple:
    """Everything that makes two targets the same connection and agent. Not the workdir: every request
    names its own, so an agent installed under one workdir serves another as well."""
    return (target.name, target.hostname, target.port, target.user, target.identity_files,
            target.identity_from_config, target.proxy_jump, target.proxy_command, target.python)


@contextmanager
def open_link(target, connect_timeout: float):
    if _kept is None:
        link = Link.to(target, connect_timeout)
        try:
            yield link
        finally:
            link.close()
        return
    if _aborted.is_set():
        raise LinkLost(target.name, "the command was cancelled")
    key = link_key(target)
    link = _kept.pop(key, None)
    if link is not None and not alive(link):
        link.close()
        link = None
    if link is None:
        link = Link.to(target, connect_timeout)
    with _lock:
        _active.append(link)
        if _aborted.is_set():  # the client went away while the link was being opened
            link.client.close()
    try:
        yield link
    except OffloadError as exc:
        if isinstance(exc, LinkLost) or link.agent is None:
            link.close()
        else:
            _kept[key] = link
        raise
    except BaseException:
        link.close()
        raise
    else:
        _kept[key] = link
    finally:
        with _lock:
            _active.remove(link)


def alive(link: Link) -> bool:
    transport = link.client.get_transport() if link.client is not None else None
    if transport is None or not transport.is_active() or link.agent is None:
        return False
    try:
        return link.agent.request("ping", timeout=10)["t"] == "pong"
    except OffloadError:
        return False


def new_command() -> None:
    _aborted.clear()


def abort_active() -> None:
    """The client went away: cut its link now (from another thread), without a word to the agent,
    whose half-received file is then dropped on the host as after any lost link."""
    with _lock:
        _aborted.set()
        for link in _active:
            if link.client is not None:
                link.client.close()


def close_all() -> None:
    if _kept:
        for link in _kept.values():
            link.close()
        _kept.clear()
