"""The one error type offload shows users: a message, a hint at what to do next, an exit code.

Only cli.main() prints these (one line each); everything below it raises.
"""
from __future__ import annotations

SSH_FAILURE_EXIT = 255  # what ssh itself exits with when it cannot connect or log in


class OffloadError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class HostUnreachable(OffloadError):
    """Nothing SSH-speaking answered: the one failure that may fall back to a local run."""
    exit_code = SSH_FAILURE_EXIT

    def __init__(self, host: str, address: str, reason: str, hint: str | None = None):
        super().__init__(f"host {host} ({address}) is unreachable: {reason}",
                         hint=hint or "is it on, and on this network? `offload hosts check` shows all hosts")
        self.host, self.address, self.reason = host, address, reason


class LinkLost(OffloadError):
    """The connection to a host (or its agent) broke while in use: the job on the host goes on."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"lost the link to {host}: {reason}",
                         hint="the run goes on on the host: `offload logs last -f` picks it up again")
        self.host, self.reason = host, reason


class HostKeyError(OffloadError):
    """An unknown or changed host key: never trusted silently, never a reason to fall back."""
    exit_code = SSH_FAILURE_EXIT

    def __init__(self, message: str, hint: str, hostname: str, got: str, expected: str | None = None):
        super().__init__(message, hint)
        self.hostname, self.got_fingerprint, self.expected_fingerprint = hostname, got, expected


class RevokedHostKey(HostKeyError):
    """The host presented a key a known_hosts file marks @revoked: refused, never offered for trust."""


class AuthFailed(OffloadError):
    exit_code = SSH_FAILURE_EXIT


class RemoteError(OffloadError):
    """The agent on the host refused or failed a request; `code` says which kind of failure."""

    def __init__(self, message: str, code: str = "", hint: str | None = None):
        super().__init__(message, hint)
        self.code = code
