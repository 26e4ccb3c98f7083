"""The one way a command reaches a target: `open_link`, a connection plus its agent, closed afterwards; or,
inside the link keeper (after `keep_links()`), the open link to the same target, checked with one round trip,
kept for the next command.

A link is only kept when the command that used it ended cleanly or with an error the agent reported: after
anything else the stream may be mid-message, so it is closed.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from offload.errors import HostUnreachable, LinkLost, OffloadError
from offload.transport.link import Link, LocalLink, ask_to_trust
from offload.transport.wake_on_lan import woken_link

_kept: dict | None = None  # target (connection fields) -> Link; None outside the keeper
_active: list = []  # the links commands are using now, for abort_active()
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


def new_link(target, connect_timeout: float, confirm) -> Link:
    """A host that does not answer and has `wake:` in hosts.yaml is woken first (wake_on_lan.py), so whatever
    the command would do next (a run's fallback to this machine) happens only if it stays asleep."""
    if getattr(target, "local", False):
        return LocalLink(target, connect_timeout, confirm).open()
    try:
        return Link(target, connect_timeout, confirm).open()
    except HostUnreachable as exc:
        if getattr(target, "wake", None) is None:
            raise
        return woken_link(target, connect_timeout, confirm, exc)


@contextmanager
def open_link(target, connect_timeout: float = 10.0, confirm=ask_to_trust):
    """A link to `target` (an SSHTarget, or config.local_target.LocalTarget for this machine) for one command.
    confirm(target, key) decides an unknown host key; None refuses it."""
    if _kept is None or getattr(target, "local", False):  # a local agent takes the command's environment: never kept
        link = new_link(target, connect_timeout, confirm)
        try:
            yield link
        finally:
            link.close()
        return
    with kept_link(target, connect_timeout, confirm) as link:
        yield link


@contextmanager
def kept_link(target, connect_timeout: float, confirm):
    if _aborted.is_set():
        raise LinkLost(target.name, "the command was cancelled")
    key = link_key(target)
    with _lock:
        link = _kept.pop(key, None)
    if link is not None and not link.alive():
        link.close()
        link = None
    if link is None:
        link = new_link(target, connect_timeout, confirm)
    link.confirm = confirm
    with _lock:
        _active.append(link)
        if _aborted.is_set():  # the client went away while the link was being opened
            link.cut()
    try:
        yield link
    except OffloadError as exc:
        keep(key, link, reusable=not isinstance(exc, LinkLost) and link.agent is not None)
        raise
    except BaseException:
        link.close()
        raise
    else:
        keep(key, link, reusable=True)
    finally:
        with _lock:
            _active.remove(link)


def keep(key: tuple, link: Link, reusable: bool) -> None:
    if not reusable:
        link.close()
        return
    with _lock:
        replaced = _kept.pop(key, None)  # two nodes of one job cannot share a key (one account twice is refused)
        _kept[key] = link
    if replaced is not None:
        replaced.close()


def new_command() -> None:
    _aborted.clear()


def abort_active() -> None:
    """The client went away: cut its links now (from another thread), without a word to the agent,
    whose half-received file is then dropped on the host as after any lost link."""
    with _lock:
        _aborted.set()
        for link in _active:
            link.cut()


def close_all() -> None:
    if _kept:
        for link in _kept.values():
            link.close()
        _kept.clear()
