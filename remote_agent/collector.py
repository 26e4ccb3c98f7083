"""The cyclic garbage collector held off while a sync builds its objects, on the host and on the laptop.

A sync keeps an object or more per file until it ends, and the collector walks every live one each time the
young objects pile up past its threshold: 15% of the agent's CPU on a sync of 100,000 files. Those objects
make no reference cycles, so the collector has nothing to find there; it runs again once the sync is done.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def paused():
    if not gc.isenabled():  # held off already (a caller, or another thread's sync): whoever did resumes it
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
