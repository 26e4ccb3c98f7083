"""A link to one host: its SSH connection and agent, reopened with backoff after an outage; and its stand-in for
this machine, the local agent, which cannot drop.

A job never depends on the link: when it drops while a run is followed, the link is reopened (for up to
--reconnect-for seconds, one line per outage) and following resumes from the last byte the laptop has.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

from offload.console import interactive, say
from offload.errors import HostUnreachable, LinkLost, OffloadError
from offload.transport import agent as agents
from offload.transport import ssh
from offload.transport.hostkeys import fingerprint

FIRST_RETRY_S = 1.0
LONGEST_RETRY_S = 30.0
SLOW_CONNECT_S = 1.0  # a connection not made by then is said, with the address being tried


def ask_to_trust(target, key) -> bool:
    """An unknown host key: in a terminal, show the fingerprint and ask, as ssh does; elsewhere refuse."""
    if not interactive():
        return False
    print(f"The authenticity of host {target.name} ({target.known_hosts_name}) can't be established.\n"
          f"{key.get_name()} key fingerprint is {fingerprint(key)}.", file=sys.stderr)
    answer = input("Trust this key and continue connecting? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


@contextmanager
def said_when_slow(message: str, enabled: bool = True):
    """Say `message` once the block has run for SLOW_CONNECT_S, so a wait for a silent host is never silent;
    a quick connection says nothing."""
    if not enabled:
        yield
        return
    timer = threading.Timer(SLOW_CONNECT_S, say, (message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()  # a line being printed ends before the command's streams are handed back


class Link:
    """The SSH client and agent of one host."""

    reconnects = True  # after an outage, following reopens the link and resumes

    def __init__(self, target, connect_timeout: float = 10.0, confirm=ask_to_trust):
        """confirm(target, key) decides an unknown host key; None refuses it (no prompt from a thread)."""
        self.target, self.connect_timeout, self.confirm = target, connect_timeout, confirm
        self.client = self.agent = None

    def open(self, say_when_slow: bool = True) -> "Link":
        """say_when_slow: a connection not made within SLOW_CONNECT_S says so (not when reconnecting: that was said)."""
        self.close()
        with said_when_slow(f"connecting to {self.target.name} ({self.target.address})...", say_when_slow):
            self.client = ssh.connect(self.target, self.connect_timeout, confirm=self.confirm)
        try:
            self.agent = agents.start_remote(self.client, self.target)
        except BaseException:
            self.client.close()
            raise
        return self

    def second_agent(self):
        """Another agent on the same connection: for a request while the first is busy following."""
        return agents.start_remote(self.client, self.target)

    def alive(self) -> bool:
        """Whether the kept link still answers, checked with one round trip."""
        transport = self.client.get_transport() if self.client is not None else None
        return transport is not None and transport.is_active() and self.answers()

    def answers(self) -> bool:
        if self.agent is None:
            return False
        try:
            return self.agent.request("ping", timeout=10)["t"] == "pong"
        except OffloadError:
            return False

    def cut(self) -> None:
        """From another thread: drop the connection now, without a word to the agent."""
        if self.client is not None:
            self.client.close()

    def close(self) -> None:
        for closing in (self.agent, self.client):
            if closing is not None:
                try:
                    closing.close()
                except Exception:  # noqa: BLE001 - a broken link may fail to close; it is being dropped anyway
                    pass
        self.agent = self.client = None

    def reconnect(self, reason: str, reconnect_for: float, offset: int | None = None) -> None:
        """Reopen with backoff; LinkLost when reconnect_for seconds pass without success. offset: where a
        follow resumes the run's output, said once reconnected."""
        name = self.target.name
        going_on = "; the run goes on there" if offset is not None else ""
        say(f"lost the link to {name} ({reason}){going_on}; reconnecting for up to {reconnect_for:g} s")
        started, delay = time.monotonic(), FIRST_RETRY_S
        while True:
            try:
                self.open(say_when_slow=False)
            except (HostUnreachable, LinkLost) as exc:
                waited = time.monotonic() - started
                if waited + delay > reconnect_for:
                    raise LinkLost(name, f"{exc.message}; gave up reconnecting after {waited:.0f} s") from None
                time.sleep(delay)
                delay = min(delay * 2, LONGEST_RETRY_S)
                continue
            resuming = f"; resuming at byte {offset}" if offset is not None else ""
            say(f"reconnected to {name} after {time.monotonic() - started:.1f} s{resuming}")
            return


class LocalLink(Link):
    """This machine's agent, a local subprocess running the very code the hosts run."""

    reconnects = False  # a pipe to a child process does not drop and come back

    def open(self, say_when_slow: bool = True) -> "LocalLink":
        self.close()  # a local agent starts at once: there is nothing to say
        self.agent = agents.start_local()
        return self

    def second_agent(self):
        return agents.start_local()

    def alive(self) -> bool:
        return self.answers()

    def cut(self) -> None:
        if self.agent is not None:
            self.agent.close()
