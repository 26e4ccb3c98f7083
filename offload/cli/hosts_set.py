"""`offload hosts set NAME KEY VALUE`: one setting of a registered host changed in place, checked as hosts.yaml
is checked when it is read, and saved as every save is (atomically, 0600); `--default` makes the host the first."""
from __future__ import annotations

import os

import yaml

from offload.config import hosts
from offload.console import say
from offload.errors import OffloadError

ENV_PREFIX = "env."  # `hosts set box env.WANDB_API_KEY VALUE`: one variable of the host's env


def set_host(name: str, key: str | None, value: str | None, make_default: bool, unset: bool) -> int:
    registry = hosts.load()
    entry = registry.get(name)
    if key is None and not make_default:
        raise OffloadError("nothing to set", hint=f"offload hosts set {name} KEY VALUE, or --default")
    if key is not None:
        changed = unset_key(entry, key) if unset else set_key(entry, key, value)
        say(f"{name}: {changed}")
    if make_default:
        registry.hosts = {name: entry, **{other: e for other, e in registry.hosts.items() if other != name}}
        say(f"{name} is the default host")
    registry.save()
    return 0


def set_key(entry: dict, key: str, value: str | None) -> str:
    if value is None:
        raise OffloadError(f"missing VALUE for {key}", hint="offload hosts set NAME KEY VALUE (or --unset KEY)")
    if key.startswith(ENV_PREFIX):
        variable = key[len(ENV_PREFIX):]
        env = {**entry.get("env", {}), variable: value}
        check("env", env)
        entry["env"] = env
        return f"env.{variable} set"  # not its value: env often holds tokens
    parsed = parse_value(key, value)
    check(key, parsed)
    entry[key] = parsed
    return f"{key} = {parsed}"


def unset_key(entry: dict, key: str) -> str:
    if key.startswith(ENV_PREFIX):
        env = entry.get("env", {})
        if env.pop(key[len(ENV_PREFIX):], None) is None:
            raise OffloadError(f"{key} is not set")
        if not env:
            entry.pop("env")
    elif entry.pop(key, None) is None:
        raise OffloadError(f"{key} is not set", hint="hosts.example.yaml lists every key")
    return f"{key} unset"


def parse_value(key: str, value: str):
    """VALUE as the key's type: numbers for numbers, YAML for peak_tflops ({bf16: 165}) and env, text as given."""
    if key not in hosts.FIELDS:
        return value  # check() names the known keys
    kind = hosts.FIELDS[key][0]
    if kind is int:
        try:
            return int(value)
        except ValueError:
            return value  # check() says what it must be
    if key in ("peak_tflops", "env"):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    if key == "identity_file" and not value.startswith("~"):  # later runs start in other directories
        return os.path.abspath(value)
    return value


def check(key: str, value) -> None:
    problem = hosts.check_field(key, value)
    if problem:
        raise OffloadError(problem, hint="see hosts.example.yaml for every key")
