"""Watching a run on its host: a link that can be reopened, and following that survives outages.

The job never depends on the link: when it drops, offload reconnects with backoff (for up to
--reconnect-for seconds, one line per outage) and resumes from the last byte the laptop has, so the
local output.log ends byte-identical to the host's.
"""
from __future__ import annotations

import sys
import time

from offload.transport import agent as agents
from offload.transport import ssh
from offload.runs import sinks as stream
from offload.errors import HostUnreachable, LinkLost

FIRST_RETRY_S = 1.0
LONGEST_RETRY_S = 30.0


class Link:
    """The SSH client and agent of one host (target None: the local agent, which cannot drop)."""

    def __init__(self, target, client, agent, connect_timeout: float = 10.0):
        self.target, self.client, self.agent, self.connect_timeout = target, client, agent, connect_timeout

    @classmethod
    def to(cls, target, connect_timeout: float = 10.0) -> "Link":
        """Connected to `target`, its agent started."""
        link = cls(target, None, None, connect_timeout)
        link.reopen()
        return link

    def reopen(self) -> None:
        self.close()
        from offload.runs.job import ask_host_key

        self.client = ssh.connect(self.target, self.connect_timeout, confirm=ask_host_key)
        try:
            self.agent = agents.start_remote(self.client, self.target)
        except BaseException:
            self.client.close()
            raise

    def close(self) -> None:
        for closing in (self.agent, self.client):
            if closing is not None:
                try:
                    closing.close()
                except Exception:  # noqa: BLE001 - a broken link may fail to close; it is being dropped anyway
                    pass
        self.agent = self.client = None


def say(message: str) -> None:
    print(f"offload: {message}", file=sys.stderr, flush=True)


def follow_run(link: Link, run_dir: str, sink, reconnect_for: float) -> dict:
    """Follow to the end (the `exit` message), reconnecting after each outage."""
    while True:
        try:
            return stream.follow(link.agent, run_dir, sink.log_bytes, sink, sink.metrics_bytes)
        except LinkLost as exc:
            if link.target is None or reconnect_for <= 0:
                raise
            reconnect(link, exc.reason, reconnect_for, sink.log_bytes)


def reconnect(link: Link, reason: str, reconnect_for: float, offset: int) -> None:
    """Reopen the link with backoff; raise LinkLost when reconnect_for seconds pass without success."""
    name = link.target.name
    say(f"lost the link to {name} ({reason}); the run goes on there; reconnecting for up to {reconnect_for:g} s")
    started = time.monotonic()
    delay = FIRST_RETRY_S
    while True:
        try:
            link.reopen()
        except (HostUnreachable, LinkLost) as exc:
            waited = time.monotonic() - started
            if waited + delay > reconnect_for:
                raise LinkLost(name, f"{exc.message}; gave up reconnecting after {waited:.0f} s") from None
            time.sleep(delay)
            delay = min(delay * 2, LONGEST_RETRY_S)
            continue
        say(f"reconnected to {name} after {time.monotonic() - started:.1f} s; resuming at byte {offset}")
        return
