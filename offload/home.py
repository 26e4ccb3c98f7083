"""Where offload keeps its own state. OFFLOAD_HOME relocates all of it (tests, portable installs)."""
from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    if os.environ.get("OFFLOAD_HOME"):
        return Path(os.environ["OFFLOAD_HOME"])
    import platformdirs  # only here: the common case (OFFLOAD_HOME unset) pays for it once

    return Path(platformdirs.user_config_dir("offload"))


def hosts_file() -> Path:
    return config_dir() / "hosts.yaml"


def known_hosts_file() -> Path:
    return config_dir() / "known_hosts"


def ssh_dir() -> Path:
    return Path(os.path.expanduser("~/.ssh"))
