"""Reading a child process's pipe with a deadline: a child that hangs fails its test with one line, never stalls it."""
from __future__ import annotations

import threading

READ_DEADLINE_S = 60.0  # what a test waits for one line or the end of a child's output; far above any honest wait


def within(seconds: float, read, what: str):
    """read() in a thread; its result, or the test fails after `seconds`. A Python buffered pipe may hold bytes
    that select() cannot see, so the read itself runs apart; the thread ends with the pipe, once the test's
    cleanup has killed the child."""
    outcome = {}

    def reader() -> None:
        try:
            outcome["value"] = read()
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's own thread
            outcome["error"] = exc

    thread = threading.Thread(target=reader, name=f"read {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"no {what} within {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def read_line_within(stream, seconds: float = READ_DEADLINE_S):
    """The next line of a child's pipe (a Popen's stdout or stderr)."""
    return within(seconds, stream.readline, "line from the process")


def read_rest_within(stream, seconds: float = READ_DEADLINE_S):
    """What is left on a child's pipe, up to its end (every writer gone)."""
    return within(seconds, stream.read, "end of the process's output")
