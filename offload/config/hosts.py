"""The host registry: hosts.yaml, read with line numbers for errors, written back on add/remove.

Each host entry keeps only what the user set; defaults and ~/.ssh/config are applied when a host is
resolved (resolve.py), so that the precedence flag > hosts.yaml > ~/.ssh/config > default holds.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml

from offload import paths as home
from offload.config import wake
from offload.errors import OffloadError

# key: (type check, description for errors)
FIELDS = {
    "hostname": (str, "a host name, address or ~/.ssh/config alias"),
    "user": (str, "a user name"),
    "port": (int, "a port number"),
    "identity_file": (str, "a path to a private key"),
    "proxy_jump": (str, "[user@]host[:port] of a jump host"),
    "python": (str, "the host's Python interpreter that has torch"),
    "workdir": (str, "a directory on the host"),
    "gpus": (int, "processes per node"),
    "rdzv_host": (str, "the address other hosts reach this one at, for multi-node rendezvous"),
    "env": (dict, "a mapping of environment variables"),
    "peak_tflops": ((int, float, dict), "a number, or a mapping such as {bf16: 165, fp32: 82.6}"),
    "setup": (str, "a shell command run in the synced project before a job when its inputs changed"),
    "on_exit": (str, "a shell command the host runs after each job ends (OFFLOAD_EXIT_CODE and friends set)"),
    "wake": (dict, f"a mapping such as {wake.EXAMPLE}"),
}
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what a shell and execve(2) take as a variable name
ONE_LINE = ("hostname", "user", "identity_file", "proxy_jump", "python", "workdir", "rdzv_host")  # `setup` may span lines
HEADER = "# offload hosts; every key is described in hosts.example.yaml\n"
YAML_KINDS = {bool: "yes/no", int: "a number", float: "a number", type(None): "empty", list: "a list", dict: "a mapping"}


class Registry:
    def __init__(self, path: Path, hosts: dict):
        self.path = path
        self.hosts = hosts  # name -> entry dict, in file order (the first is the default host)

    @property
    def default_name(self) -> str | None:
        return next(iter(self.hosts), None)

    def get(self, name: str) -> dict:
        if name not in self.hosts:
            known = ", ".join(self.hosts) or "none registered"
            raise OffloadError(f"unknown host {name!r} (known: {known})",
                               hint=f"register it: offload hosts add {name} [user@]hostname")
        return self.hosts[name]

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = yaml.safe_dump({"hosts": self.hosts}, sort_keys=False, default_flow_style=False)
        write_privately(self.path, HEADER + text)


def write_privately(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only (hosts.yaml's `env` often holds API tokens): a
    temporary file of this save's own beside it, made durable, then renamed over it. A reader, a crash or a
    second save at the same moment sees the old file or the new one, whole; a world-readable file becomes 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def load(path: Path | None = None) -> Registry:
    path = path or home.hosts_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Registry(path, {})
    except OSError as exc:
        raise OffloadError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise OffloadError(f"{path} is not UTF-8 text", hint="fix the file, or remove it and use `offload hosts add`") from None
    return Registry(path, parse(text, str(path)))


def load_yaml(text: str, filename: str, hint: str) -> tuple:
    """(node tree, data) of a YAML file; a syntax error is one line naming file:line."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark and mark.line >= len(text.splitlines()):  # "but got <stream end>": where the open bracket was
            mark = getattr(exc, "context_mark", None) or mark
        line = mark.line + 1 if mark else None
        if line is None and isinstance(getattr(exc, "position", None), int):  # a NUL or control byte: no mark
            line = text.count("\n", 0, exc.position) + 1
        where = f"{filename}:{line}" if line else filename
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise OffloadError(f"{where}: not valid YAML: {problem}", hint=hint) from None


def parse(text: str, filename: str) -> dict:
    root, data = load_yaml(text, filename, hint="fix the file, or remove it and use `offload hosts add`")
    if data is None:
        return {}

    def fail(node, message: str):
        line = node.start_mark.line + 1 if node is not None else 1
        raise OffloadError(f"{filename}:{line}: {message}", hint="see hosts.example.yaml for every key")

    if not isinstance(data, dict) or not isinstance(data.get("hosts", {}), (dict, type(None))):
        fail(root, "expected a mapping `hosts:` of host names to settings")
    unknown_top = sorted(set(data) - {"hosts"}, key=str)
    if unknown_top:
        fail(key_node(root, unknown_top[0]), f"unknown key {unknown_top[0]!r} (only `hosts:`)")
    hosts = data.get("hosts") or {}
    hosts_node = child(root, "hosts")
    for name, entry in hosts.items():
        if not isinstance(name, str):
            fail(key_node(hosts_node, name), f"host name {name!r} is not text to YAML: put it in quotes")
        if not NAME_PATTERN.match(name):
            fail(key_node(hosts_node, name), f"bad host name {name!r}: use letters, digits, '.', '_' and '-'")
        if entry is None:
            hosts[name] = entry = {}
        if not isinstance(entry, dict):
            fail(key_node(hosts_node, name), f"host {name}: expected a mapping of settings")
        entry_node = child(hosts_node, name)
        for key, value in entry.items():
            problem = check_field(key, value)
            if problem:
                node = key_node(entry_node, key)
                bad_env = first_bad_env(value) if key == "env" and isinstance(value, dict) else None
                if bad_env is not None:  # the variable's own line, not env's
                    node = key_node(child(entry_node, "env"), bad_env[0])
                fail(node, f"host {name}: {problem}")
    return hosts


def check_field(key: str, value) -> str | None:
    """What is wrong with one setting, or None."""
    if key not in FIELDS:
        return f"unknown key {key!r} (known: {', '.join(FIELDS)})"
    kind, description = FIELDS[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{key} must be {description}, not {value!r}"
    if kind is not int and not isinstance(value, kind):
        return f"{key} must be {description}, not {value!r}"
    if key == "port" and not 0 < value < 65536:
        return f"port must be between 1 and 65535, not {value}"
    if key == "gpus" and value < 1:
        return f"gpus must be at least 1, not {value}"
    if key == "peak_tflops" and not all(
            k in PRECISIONS and positive_number(v) for k, v in (value.items() if isinstance(value, dict) else [("fp32", value)])):
        return f"peak_tflops must be {description}, with precisions from {', '.join(PRECISIONS)} and numbers above 0"
    if key == "wake":
        return wake.problem(value)
    if key == "env":
        bad_env = first_bad_env(value)
        return bad_env[1] if bad_env else None
    if isinstance(value, str):
        if "\0" in value:
            return f"{key} contains a NUL character: remove it"
        if key in ONE_LINE and ("\n" in value or "\r" in value):
            return f"{key} must be one line, not {value!r}"
    if key in ("python", "workdir") and value.startswith("~") and not (value == "~" or value.startswith("~/")):
        return f"{key}: only ~/ is understood, not {value!r}"
    return None


def first_bad_env(env: dict) -> tuple | None:
    """(name, what is wrong) for the first variable that is not a NAME: 'text' pair, or None. A name with `=` or
    a NUL in it would stop the job's supervisor on the host, and a number or `yes` would reach the job changed
    (1.0, True): all are caught here, with the line."""
    for name, value in env.items():
        if not isinstance(name, str):
            return name, f"env name {name!r} is not text to YAML: put it in quotes"
        if not ENV_NAME_PATTERN.fullmatch(name):
            return name, (f"env name {name!r} is not a variable name: use letters, digits and '_', "
                          "not starting with a digit")
        if not isinstance(value, str):  # the value is not shown: env often holds tokens
            kind = YAML_KINDS.get(type(value), "not text")
            return name, f"env.{name} must be a string (quote it): YAML reads it as {kind}"
        if "\0" in value:
            return name, f"env.{name} contains a NUL character: remove it"
    return None


def positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def child(node, key):
    """The mapping node under `key` in a YAML mapping node, to look further in; or the node itself."""
    if isinstance(node, yaml.MappingNode):
        for key_of, value_node in node.value:
            if key_of.value == str(key):
                return value_node if isinstance(value_node, yaml.MappingNode) else key_of
    return node


def key_node(node, key):
    """The node of `key` itself in a YAML mapping node (its line is the one to report), or the node."""
    if isinstance(node, yaml.MappingNode):
        for key_of, _ in node.value:
            if key_of.value == str(key):
                return key_of
    return node
