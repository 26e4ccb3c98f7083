"""Which ports to forward, as `ssh -L` takes them: `6006` (the same port on both ends) or `8888:8889`
(laptop port 8888 to the host's 8889), from `--forward` or the `ports:` list of offload.yaml."""
from __future__ import annotations

from dataclasses import dataclass

from offload.errors import OffloadError

HINT = "give a port such as 6006, or LOCAL:REMOTE such as 8888:8889 (each 1-65535)"


@dataclass(frozen=True)
class PortForward:
    local: int   # on the laptop (or --bind's address)
    remote: int  # on the host's 127.0.0.1


def parse_forward(spec, where: str = "--forward") -> PortForward:
    """A PortForward from 6006, "6006" or "8888:8889"; a one-line error naming `where` otherwise."""
    if isinstance(spec, bool):
        spec = str(spec)
    text = str(spec).strip()
    parts = text.split(":")
    if len(parts) > 2 or not all(part.isdigit() and 1 <= int(part) <= 65535 for part in parts):
        raise OffloadError(f"{where} {text!r} is not a port", hint=HINT)
    return PortForward(int(parts[0]), int(parts[-1]))


def merged(given: list, configured: tuple) -> list:
    """--forward's ports, then offload.yaml's, each laptop port once (the command line's wins)."""
    chosen = {}
    for forward in [*given, *configured]:
        chosen.setdefault(forward.local, forward)
    return list(chosen.values())
