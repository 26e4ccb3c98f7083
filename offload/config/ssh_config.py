"""~/.ssh/config's settings for one alias, as OpenSSH itself resolves them.

Where the `ssh` client is installed, `ssh -G` answers: Include, Match, first-match-wins and HostName
tokens are then OpenSSH's own rules, not a copy of them. Without it, paramiko's parser stands in (it
ignores Include), and `offload hosts check` says which one was used.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
from functools import lru_cache

from offload import paths as home
from offload.errors import OffloadError

SSH_G_TIMEOUT_S = 5  # `ssh -G` reads files and runs `Match exec` commands: seconds at most
SETTINGS = ("hostname", "user", "port", "identityfile", "proxyjump", "proxycommand")  # what resolve() takes
PARAMIKO = "paramiko's parser (no ssh client)"


def config_file():
    return home.ssh_dir() / "config"


def ssh_client() -> str | None:
    return shutil.which("ssh")


def describe_reader() -> str:
    """Which reader ssh_config_for() uses, for `offload hosts check`."""
    path = config_file()
    if not path.is_file():
        return f"none ({path} does not exist)"
    return f"from `ssh -G` ({path})" if ssh_client() else f"from {PARAMIKO} ({path})"


def ssh_config_for(alias: str) -> dict:
    """The settings ~/.ssh/config gives `alias` (lower-case keys, identityfile a list), or {} without one.

    Tokens (%h, %r, ...) in IdentityFile and ProxyCommand are left for resolve(), which knows the final
    hostname, port and user they stand for."""
    path = config_file()
    if not path.is_file():
        return {}
    ssh = ssh_client()
    return settings_from_ssh_g(ssh, alias, str(path)) if ssh else settings_from_paramiko(alias, path)


def settings_from_ssh_g(ssh: str, alias: str, path: str) -> dict:
    """What the config file sets for alias, by `ssh -G`.

    `ssh -G` prints every option with OpenSSH's defaults filled in (port 22, the passwd user, ~/.ssh/id_rsa
    and six more identity files), and no sign of which ones the config set. A setting counts as the
    config's where it differs from `ssh -G -F /dev/null` of the same alias: OpenSSH with no config at all.
    A config value equal to the default is dropped, which changes nothing, since flag > hosts.yaml > config
    > default then lands on the same value: offload's defaults are OpenSSH's (the local user aside: offload
    takes $LOGNAME or $USER first, as paramiko does, where ssh reads the passwd entry)."""
    chosen = run_ssh_g(ssh, alias, path)
    defaults = openssh_defaults(ssh, alias)
    return {key: value for key, value in chosen.items() if value != defaults.get(key)}


@lru_cache(maxsize=None)
def openssh_defaults(ssh: str, alias: str) -> dict:
    """`ssh -G` of alias with no config file: the same on every call, so asked once per process."""
    return run_ssh_g(ssh, alias, os.devnull)


def run_ssh_g(ssh: str, alias: str, path: str) -> dict:
    # -F only where the file is not the one ssh reads itself (ssh finds ~ in the passwd entry, not $HOME):
    # a file given by -F is read instead of /etc/ssh/ssh_config too, which the user's own ssh reads.
    # -T: no "Pseudo-terminal will not be allocated" on stderr; "--": an alias is never read as an option.
    config = [] if path == passwd_user_config() else ["-F", path]
    argv = [ssh, "-G", "-T", *config, "--", alias]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=SSH_G_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise OffloadError(f"`ssh -G {alias}` did not answer within {SSH_G_TIMEOUT_S} s reading {path}",
                           hint="look for a slow `Match exec` command in it") from None
    except OSError as exc:
        raise OffloadError(f"cannot run {ssh} -G: {exc.strerror}") from None
    if done.returncode != 0:
        why = next((line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()),
                   f"ssh -G exited with {done.returncode}")
        raise OffloadError(f"cannot read {path} for {alias}: {why}",
                           hint=f"fix it; `ssh -G {alias}` shows what OpenSSH makes of it")
    return read_ssh_g_output(done.stdout.decode(errors="replace"))


def passwd_user_config() -> str | None:
    """The ~/.ssh/config ssh itself reads: under the passwd entry's home."""
    try:
        return os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ssh", "config")
    except KeyError:  # a uid with no passwd entry (some containers)
        return None


def read_ssh_g_output(text: str) -> dict:
    """`ssh -G` prints lower-case `key value` lines; identityfile repeats, one line per file."""
    settings: dict = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "identityfile":
            settings.setdefault(key, []).append(value)
        elif key in SETTINGS and value.lower() != "none":
            settings[key] = value
    return settings


def settings_from_paramiko(alias: str, path) -> dict:
    import paramiko  # lazy: ~170 ms to import, and needed only where there is no ssh client to ask

    try:
        found = paramiko.SSHConfig.from_path(str(path)).lookup(alias)
    except Exception as exc:  # a config paramiko cannot parse must not hide the host entirely
        raise OffloadError(f"cannot read {path}: {exc}") from None
    return {key: value for key, value in found.items() if key in SETTINGS and value is not None}


# --- OpenSSH's %-tokens ---------------------------------------------------------------------------

def openssh_tokens(alias: str, hostname: str, port: int, user: str, proxy_jump: str | None) -> dict:
    """The tokens ssh_config(5) defines for IdentityFile (ProxyCommand takes %h %k %n %p %r of them)."""
    local_host = socket.gethostname()
    jump = proxy_jump or ""
    return {
        "h": hostname, "p": str(port), "r": user, "n": alias,
        "k": alias,  # the HostKeyAlias, which offload does not read: the alias, as without one
        "u": getpass.getuser(), "d": os.path.expanduser("~"), "i": str(os.getuid()),
        "l": local_host, "L": local_host.split(".")[0], "j": jump,
        "C": hashlib.sha1(f"{local_host}{hostname}{port}{user}{jump}".encode()).hexdigest(),
    }


PROXY_COMMAND_TOKENS = "hknpr"


def expand_tokens(text: str, tokens: dict, setting: str, alias: str) -> str:
    """OpenSSH's percent_expand: %% is a %, %X its token; any other %X is refused, as ssh refuses it."""
    def token(match: re.Match) -> str:
        key = match.group(1)
        if key == "%":
            return "%"
        if key in tokens:
            return tokens[key]
        raise OffloadError(f"{setting} {text!r} for {alias} in {config_file()}: unknown token %{key}",
                           hint="ssh_config(5) lists the tokens each setting takes; write %% for a %")

    return re.sub(r"%(.?)", token, text, flags=re.DOTALL)
