"""Waking a sleeping host (Wake-on-LAN): hosts.yaml's `wake: {mac: AA:BB:CC:DD:EE:FF, broadcast: 192.168.1.255,
port: 9, wait: 90}`, checked as the rest of hosts.yaml is. Only `mac` is needed."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAC_PATTERN = re.compile(r"[0-9A-Fa-f]{2}([:-]?)[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")
KEYS = ("mac", "broadcast", "port", "wait")
EXAMPLE = "{mac: AA:BB:CC:DD:EE:FF, broadcast: 192.168.1.255, port: 9, wait: 90}"


@dataclass(frozen=True)
class Wake:
    mac: str                            # aa:bb:cc:dd:ee:ff
    broadcast: str = "255.255.255.255"  # the LAN's broadcast address (a directed one crosses a router, if it lets it)
    port: int = 9                       # the discard port, as most tools send to (7 and 0 also work for most NICs)
    wait: float = 90.0                  # seconds to wait for its SSH server once the packet is sent


def problem(value) -> str | None:
    """What is wrong with a `wake:` setting, or None."""
    if not isinstance(value, dict):
        return f"wake must be a mapping such as {EXAMPLE}, not {value!r}"
    unknown = [key for key in value if key not in KEYS]
    if unknown:
        return f"wake: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})"
    mac = value.get("mac")
    if not isinstance(mac, str) or not MAC_PATTERN.fullmatch(mac.strip()):
        return f"wake.mac must be a MAC address such as AA:BB:CC:DD:EE:FF, not {mac!r}"
    broadcast = value.get("broadcast", Wake.broadcast)
    try:
        ipaddress.IPv4Address(broadcast)
    except (ipaddress.AddressValueError, ValueError):
        return f"wake.broadcast must be an IPv4 address such as 192.168.1.255, not {broadcast!r}"
    port = value.get("port", Wake.port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        return f"wake.port must be a UDP port (9, as most tools use), not {port!r}"
    wait = value.get("wait", Wake.wait)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait <= 0:
        return f"wake.wait must be seconds above 0, not {wait!r}"
    return None


def parse(value) -> Wake | None:
    """The Wake of a checked setting (hosts.check_field), None for none."""
    if value is None:
        return None
    digits = re.sub(r"[^0-9A-Fa-f]", "", value["mac"]).lower()
    return Wake(":".join(digits[i:i + 2] for i in range(0, 12, 2)), str(value.get("broadcast", Wake.broadcast)),
                int(value.get("port", Wake.port)), float(value.get("wait", Wake.wait)))
