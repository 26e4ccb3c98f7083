"""Wake-on-LAN: a sleeping host is sent a magic packet (6 bytes of 0xff, then its MAC 16 times, by UDP broadcast),
and its SSH server is waited for, before anything falls back to this machine. open_link (links.py) does it for
every command when a host with `wake:` in hosts.yaml does not answer; `offload hosts wake NAME` does it alone."""
from __future__ import annotations

import socket
import time

from offload.console import say
from offload.errors import HostUnreachable, OffloadError
from offload.transport.link import Link

RETRY_S = 2.0  # between attempts to reach a waking host: a booting box brings sshd up in 10-60 s
PACKETS = 3  # UDP may drop one; a NIC takes any of them


def magic_packet(mac: str) -> bytes:
    return b"\xff" * 6 + bytes.fromhex(mac.replace(":", "")) * 16


def sent(wake) -> str:
    """What was sent where, and how long offload waits: the words after "sent it"."""
    return f"a Wake-on-LAN packet ({wake.mac} to {wake.broadcast}:{wake.port}); waiting up to {wake.wait:g} s for it"


def send_magic_packet(wake) -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            for _ in range(PACKETS):
                sock.sendto(magic_packet(wake.mac), (wake.broadcast, wake.port))
    except OSError as exc:
        raise OffloadError(f"cannot send a Wake-on-LAN packet to {wake.broadcast}:{wake.port}: {exc.strerror or exc}",
                           hint="check wake.broadcast in hosts.yaml: this LAN's broadcast address, e.g. 192.168.1.255") from None


def woken_link(target, connect_timeout: float, confirm, unreachable: HostUnreachable) -> Link:
    """The link to a host that did not answer, once a magic packet has woken it; HostUnreachable when it does
    not answer within its wake.wait."""
    wake = target.wake
    send_magic_packet(wake)
    say(f"{target.name} is unreachable ({unreachable.reason}): sent it {sent(wake)}")
    return link_once_awake(target, connect_timeout, confirm, unreachable.reason)


def link_once_awake(target, connect_timeout: float, confirm, reason: str) -> Link:
    wake = target.wake
    started = time.monotonic()
    deadline = started + wake.wait
    while True:
        time.sleep(min(RETRY_S, max(deadline - time.monotonic(), 0)))
        try:
            link = Link(target, min(connect_timeout, max(deadline - time.monotonic(), 1.0)), confirm)
            link.open(say_when_slow=False)
        except HostUnreachable as exc:
            reason = exc.reason
            if time.monotonic() >= deadline:
                raise HostUnreachable(target.name, target.address,
                                      f"{reason}, and it did not wake within {wake.wait:g} s of a Wake-on-LAN packet",
                                      hint="is Wake-on-LAN on in its BIOS and OS (ethtool -s IFACE wol g), and "
                                           "wake.mac its wired NIC's?") from None
            continue
        say(f"{target.name} is awake: it answered {time.monotonic() - started:.0f} s after the packet")
        return link


def wake_host(target, connect_timeout: float) -> int:
    """`offload hosts wake NAME`: the packet, then the wait for its SSH server; 0 once it answers."""
    if target.wake is None:
        raise OffloadError(f"host {target.name} has no wake: setting, so offload does not know its MAC",
                           hint=f"add `wake: {{mac: AA:BB:CC:DD:EE:FF}}` to {target.name} in hosts.yaml "
                                "(offload hosts add NAME DEST --wake-mac MAC, for a new host)")
    send_magic_packet(target.wake)
    say(f"sent {target.name} {sent(target.wake)}")
    link_once_awake(target, connect_timeout, None, "no answer yet").close()
    return 0
