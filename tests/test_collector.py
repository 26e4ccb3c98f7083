"""The cyclic collector is held off for a sync's duration only, and always comes back (remote_agent/collector.py)."""
import gc

import pytest

from remote_agent import collector


def test_the_collector_is_held_off_inside_and_back_after():
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_failure_inside_still_brings_it_back():
    with pytest.raises(RuntimeError):
        with collector.paused():
            raise RuntimeError("a sync that failed")
    assert gc.isenabled()


def test_a_pause_inside_a_pause_leaves_the_resuming_to_the_outer_one():
    with collector.paused():
        with collector.paused():
            pass
        assert not gc.isenabled()  # the inner one must not resume what it did not hold off
    assert gc.isenabled()


def test_held_off_by_someone_else_it_stays_so():
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
