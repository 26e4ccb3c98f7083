"""A client's command, run in the keeper's main thread as it would run in the client's own process.

It gets the client's stdin, stdout and stderr: the descriptors the client passed become 0, 1 and 2 (so the
subprocesses a command starts inherit them, as they would in-process) and sys.stdin/stdout/stderr, with the
client's encodings and buffering, so bytes and text reach the client's terminal or pipe exactly as written and a
prompt reads the client's own terminal. It gets the client's environment, working directory and umask too.
Ctrl-C at the client arrives as SIGINT to the main thread: our handler raises KeyboardInterrupt where Python's
own would, and a handler the command installs (a local run's stop_on_interrupt) takes it instead, as in-process.
A client that goes away gets SIGUSR1 instead, which raises ClientGone.
"""
from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager

from offload.cli import app as cli
from offload.keeper.session import ClientGone, Session
from offload.transport import links

INTERRUPTED_EXIT = 130  # as a shell reports a process that SIGINT ended
STREAM_FDS = (0, 1, 2)
STREAM_NAMES = ("stdin", "stdout", "stderr")


class MainThreadSignals:
    """SIGINT and SIGUSR1 of the keeper raise in the command its main thread runs, and nowhere else."""

    def __init__(self):
        self.session: Session | None = None  # the one whose command runs now
        self.main_thread = threading.main_thread().ident

    def install(self) -> None:
        signal.signal(signal.SIGINT, self.on_interrupt)
        signal.signal(signal.SIGUSR1, self.on_client_gone)

    def on_interrupt(self, signum, frame) -> None:
        if self.session is not None:
            raise KeyboardInterrupt

    def on_client_gone(self, signum, frame) -> None:
        if self.session is not None and self.session.gone.is_set():
            raise ClientGone

    def interrupt(self) -> None:
        """From the thread listening to the client: Ctrl-C there."""
        signal.pthread_kill(self.main_thread, signal.SIGINT)

    def client_gone(self) -> None:
        links.abort_active()  # its link first, cut without a word to the agent: the host drops a half-sent file
        signal.pthread_kill(self.main_thread, signal.SIGUSR1)


def run_command(session: Session, signals: MainThreadSignals, keeper_fds: list) -> None:
    """Run the session's command line and tell its client the exit code."""
    request, code = session.request, None
    session.reply({"started": True})  # from here on the client never runs the command itself
    try:
        with client_streams(request, session.fds, keeper_fds), client_environment(request):
            links.new_command()
            session.listen(signals.interrupt, signals.client_gone)
            code = run_interruptibly(session, signals, request, keeper_fds[2])
    except KeyboardInterrupt:  # pressed just as the command ended
        code = INTERRUPTED_EXIT
    except ClientGone:
        code = None
    finally:
        signals.install()  # whatever handler the command may have left behind
        session.finish(code)


def run_interruptibly(session: Session, signals: MainThreadSignals, request: dict, log_fd: int) -> int | None:
    """The command's exit code, Ctrl-C raised in it; None when its client went away."""
    try:
        os.chdir(request["cwd"])
    except OSError as exc:  # the client's cwd went away since it sent it
        print(f"offload: error: {exc}", file=sys.stderr)
        return 1
    signals.session = session
    try:
        if not session.begin():  # Ctrl-C, or the client gone, before it began: in-process it would not begin either
            return None if session.gone.is_set() else INTERRUPTED_EXIT
        return cli.run_cli(list(request["argv"]), log_internal=lambda exc: log_traceback(exc, log_fd))
    except KeyboardInterrupt:  # outside anything of the command's that takes it: Python ends the process so
        return INTERRUPTED_EXIT
    except ClientGone:
        return None
    finally:
        signals.session = None
        session.end()


def log_traceback(exc: BaseException, log_fd: int) -> None:
    """An internal error's traceback goes to the keeper's log; the client gets the one line the CLI prints."""
    os.write(log_fd, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).encode())


@contextmanager
def client_streams(request: dict, fds: list, keeper_fds: list):
    """The client's descriptors as 0, 1, 2 and sys.stdin/stdout/stderr; the keeper's own back afterwards."""
    saved = sys.stdin, sys.stdout, sys.stderr
    for target, fd in zip(STREAM_FDS, fds):
        os.dup2(fd, target)
    facts = request.get("streams") or {}
    # sys.stdin on a descriptor of its own, not 0: input() then reads through this Python buffer, which ends with
    # the command, never through C's stdin buffer, which the keeper would carry on into the next command.
    streams = [text_stream(os.dup(0), "r", facts.get("stdin")), text_stream(1, "w", facts.get("stdout")),
               text_stream(2, "w", facts.get("stderr"))]
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        yield
    finally:
        for stream in streams:
            try:
                stream.close()  # flushes what the command wrote last
            except (OSError, ValueError):  # the client's pipe closed: in-process the same bytes would be lost
                pass
        sys.stdin, sys.stdout, sys.stderr = saved
        for target, fd in zip(STREAM_FDS, keeper_fds):
            os.dup2(fd, target)


def text_stream(fd: int, mode: str, facts: list | None) -> io.TextIOWrapper:
    """As Python opens a standard stream, with the client's encoding, errors, line buffering and write-through."""
    encoding, errors, line_buffering, write_through = facts or ("utf-8", "strict", False, False)
    raw = io.FileIO(fd, mode, closefd=mode == "r")  # 1 and 2 go back to the keeper's own afterwards
    if mode == "r":
        buffer = io.BufferedReader(raw)
    else:
        buffer = raw if write_through else io.BufferedWriter(raw)  # python -u: unbuffered, as in-process
    return io.TextIOWrapper(buffer, encoding=encoding, errors=errors, newline="\n", line_buffering=line_buffering,
                            write_through=write_through)


@contextmanager
def client_environment(request: dict):
    """The client's environment (TZ included) and umask; its cwd is the command's own first step."""
    saved_env, saved_umask = dict(os.environ), os.umask(int(request.get("umask", 0o022)))
    os.environ.clear()
    os.environ.update(request.get("env") or {})
    time.tzset()
    try:
        yield
    finally:
        os.umask(saved_umask)
        os.environ.clear()
        os.environ.update(saved_env)
        time.tzset()
        os.chdir("/")
