"""From a host name to everything needed to reach it, with one precedence written out once:

    explicit flag  >  hosts.yaml  >  ~/.ssh/config (as `ssh -G` resolves it: ssh_config.py)  >  default
"""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field

from offload.config import hosts, wake
from offload.errors import OffloadError
from offload.config.ssh_config import PROXY_COMMAND_TOKENS, expand_tokens, openssh_tokens, ssh_config_for

DEFAULTS = {"port": 22, "python": "python3", "workdir": "~/offload", "gpus": 1}


@dataclass(frozen=True)
class SSHTarget:
    name: str                 # the registry name, e.g. "4070ti"
    hostname: str             # what the TCP connection goes to
    port: int
    user: str
    identity_files: tuple = ()
    identity_from_config: bool = False  # ssh skips a missing IdentityFile of ~/.ssh/config; a flag's must exist
    proxy_jump: str | None = None
    proxy_command: str | None = None  # ~/.ssh/config's ProxyCommand, its tokens expanded: the SSH link's pipe
    python: str = DEFAULTS["python"]
    workdir: str = DEFAULTS["workdir"]
    gpus: int = 1
    env: dict = field(default_factory=dict)
    peak_tflops: object = None  # hosts.yaml override: a number, or {precision: number}
    rdzv_host: str | None = None  # how the other nodes of a multi-node run reach this host (default: hostname)
    setup: str | None = None  # hosts.yaml: shell text run before a job when its inputs changed (see setup.py)
    on_exit: str | None = None  # hosts.yaml: shell text the host runs after each job (remote_agent/on_exit.py)
    wake: object = None  # config.wake.Wake: how to wake it when it does not answer (transport/wake_on_lan.py)
    hop_for: str | None = None  # a ProxyJump hop: the registered host it leads to

    @property
    def registered_name(self) -> str:
        """The name `offload hosts ...` commands know this host (or the host behind this hop) by."""
        return self.hop_for or self.name

    @property
    def address(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this host in known_hosts."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def split_destination(destination: str) -> tuple:
    """'alice@box:2222' -> ('alice', 'box', 2222); parts not given are None."""
    user, _, rest = destination.rpartition("@")
    hostname, port = rest, None
    if rest.count(":") == 1:
        hostname, port_text = rest.split(":")
        if not port_text.isdigit():
            raise OffloadError(f"bad port in {destination!r}")
        port = int(port_text)
    return (user or None), hostname, port


def resolve(name: str, entry: dict, flags: dict | None = None, ssh_config: dict | None = None) -> SSHTarget:
    """Pure: combine flags, the hosts.yaml entry and ~/.ssh/config for one host."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    alias = flags.get("hostname") or entry.get("hostname") or name
    config = ssh_config_for(alias) if ssh_config is None else ssh_config

    def pick(key: str, config_key: str | None = None, default=None):
        for source in (flags.get(key), entry.get(key), config.get(config_key) if config_key else None):
            if source is not None:
                return source
        return default

    port = pick("port", "port", DEFAULTS["port"])
    if not str(port).isdigit():  # hosts.yaml ports are checked on load; ~/.ssh/config's only here
        raise OffloadError(f"bad Port {port!r} for {alias} in ~/.ssh/config", hint="fix it, or set port in hosts.yaml")
    hostname, user = config.get("hostname", alias), pick("user", "user", None) or getpass.getuser()
    proxy_jump = pick("proxy_jump", "proxyjump")
    tokens = openssh_tokens(alias, hostname, int(port), user, proxy_jump)
    identity = pick("identity_file")
    if identity is not None:
        identity_files = (os.path.expanduser(identity),)
    else:
        identity_files = tuple(os.path.expanduser(expand_tokens(p, tokens, "IdentityFile", alias))
                               for p in config.get("identityfile", []))
    return SSHTarget(
        name=name,
        hostname=hostname,
        port=int(port),
        user=user,
        identity_files=identity_files,
        identity_from_config=identity is None and bool(identity_files),
        proxy_jump=proxy_jump,
        proxy_command=proxy_command_of(config, proxy_jump, tokens, alias),
        python=pick("python", default=DEFAULTS["python"]),
        workdir=pick("workdir", default=DEFAULTS["workdir"]),
        gpus=int(pick("gpus", default=DEFAULTS["gpus"])),
        env={k: str(v) for k, v in (pick("env", default={}) or {}).items()},
        peak_tflops=pick("peak_tflops"),
        setup=entry.get("setup"),
        on_exit=entry.get("on_exit"),
        wake=wake.parse(entry.get("wake")),
        rdzv_host=pick("rdzv_host"),
    )


def proxy_command_of(config: dict, proxy_jump: str | None, tokens: dict, alias: str) -> str | None:
    """~/.ssh/config's ProxyCommand, unless a ProxyJump (any, `none` too) was given: OpenSSH takes the first
    of the two it meets, and a flag or hosts.yaml comes before the config file."""
    command = config.get("proxycommand")
    if proxy_jump is not None or not command or command.lower() == "none":
        return None
    proxy_tokens = {key: tokens[key] for key in PROXY_COMMAND_TOKENS}
    return expand_tokens(command, proxy_tokens, "ProxyCommand", alias)


def resolve_jump(spec: str) -> SSHTarget:
    """A ProxyJump hop, 'user@host:port' or an ~/.ssh/config alias, resolved like ssh does."""
    user, hostname, port = split_destination(spec)
    return resolve(spec, {}, flags={"hostname": hostname, "user": user, "port": port})


def registered_target(host_name: str | None, doing: str) -> SSHTarget:
    """The registered host of that name (default: the first in hosts.yaml), resolved; none registered is an
    error saying what there was no host to do ("sync to", "run on")."""
    registry = hosts.load()
    name = host_name or registry.default_name
    if name is None:
        raise OffloadError(f"no host to {doing}", hint="offload hosts add NAME [user@]hostname")
    return resolve(name, registry.get(name))
