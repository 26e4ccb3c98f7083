"""This machine as a target: where a run goes when no host is registered or reachable (the CPU fallback).

It has what a run asks of a registered host (name, environment, processes, peak, setup), with the values a
local run uses; the run's own directory and locking differ, and are the local node's to say (runs/nodes.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from offload.config.hoststate import LOCAL


@dataclass(frozen=True)
class LocalTarget:
    name: str = LOCAL
    address: str | None = None  # nothing to connect to: the agent is a local subprocess
    env: dict = field(default_factory=dict)  # the laptop's own environment, as it is
    gpus: int = 1
    peak_tflops: object = None  # never overridden: this machine's peak comes from its CPU facts
    setup: str | None = None  # setup runs only on hosts
    workdir: str = "~"  # where `hosts check local` reports free disk; a local run runs in the project itself
    local: bool = True
