"""The measured matmul ceiling of the host's device (see matmul_probe.py)."""
from __future__ import annotations

from .probe import run_json
from .protocol import RequestError

IMPORT_ALLOWANCE_S = 120  # importing torch and initialising CUDA on a cold host can take a while
MAX_SECONDS = 3600  # an hour measures any device; more (or inf, or NaN) would hold the agent for ever


def measure(seconds) -> dict:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_SECONDS:
        raise RequestError("bad_request", f"a benchmark runs for more than 0 and at most {MAX_SECONDS} seconds, "
                                          f"not {seconds!r}")
    return run_json("remote_agent.matmul_probe", str(seconds), timeout=seconds + IMPORT_ALLOWANCE_S,
                    what="the matmul probe")
