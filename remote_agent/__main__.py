"""Agent entry point: `python -m remote_agent`, run in the directory that holds the package.

Stdout carries protocol messages only; anything else the agent or a library might print goes to stderr.
Whatever fails inside one request is answered with one `error` message and the agent serves the next: only
a channel whose framing is lost (the laptop went away, or sent what is not a message) ends it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
import time

from . import (ceiling, codecs, collector, facts, files, following, gpu_usage, host_dirs, job_stdin, jobs, protocol,
               run_status, stopping, waiting_line)
from .fence import OutsideProject
from .manifest_memo import ManifestMemo
from .protocol import RequestError

AGENT_VERSION = "0.1.0"
SYNC_REQUESTS = frozenset({"prepare", "apply", "blocks", "bases"})  # served with the collector held off


class Agent:
    def __init__(self, inp, out):
        self.inp = inp
        self.out = out
        self.receiver = files.Receiver()
        self.manifests = ManifestMemo()
        self.handlers = {kind: getattr(self, kind) for kind in protocol.REQUESTS if kind not in ("bye", "apply")}
        self.next_message = None  # a request the laptop sent while a follow served its stdin: served next

    def send(self, message_type: str, /, **fields) -> None:
        protocol.write_message(self.out, message_type, **fields)

    def serve(self) -> None:
        # codecs: what it decompresses, best first; the laptop compresses a sync's bytes with one of them or none
        self.send("hello", agent=AGENT_VERSION, codecs=codecs.decodable(), **facts.hello())
        while True:
            try:
                message, self.next_message = self.next_message or protocol.read_message(self.inp), None
            except protocol.ProtocolError as exc:  # not a message: the laptop hears why before the channel closes
                self.say_last("protocol", str(exc))
                raise
            if message is None or message["t"] == "bye":
                return
            if message["t"] in protocol.FOLLOW_INPUT:  # late, for a follow that has ended: nobody waits for it
                for _ in protocol.read_exactly(self.inp, int(message.get("size", 0))):
                    pass
                continue
            try:
                self.handle(message)
            except RequestError as exc:
                self.say(exc.code, str(exc))
            except OSError as exc:
                self.say(error_code(exc), describe_os_error(exc))
            except OutsideProject as exc:
                self.say("refused", str(exc))
            except protocol.ProtocolError as exc:  # where the next message starts is lost: say so, then go
                self.say_last("protocol", str(exc))
                raise
            except Exception as exc:  # a bug, or a request no check foresaw: one line, and serve on
                self.say("internal", f"{type(exc).__name__}: {exc}")

    def say(self, code: str, text: str) -> None:
        """An error, on one line: a path the laptop sent may hold a line break, and the user reads this."""
        self.send("error", code=code, message=one_line(text))

    def say_last(self, code: str, text: str) -> None:
        try:
            self.say(code, text)
        except OSError:
            pass  # the laptop is gone already

    def handle(self, message: dict) -> None:
        """Serve one request (protocol.REQUESTS names them all, and what each must carry)."""
        with collector.paused() if message["t"] in SYNC_REQUESTS else contextlib.nullcontext():
            if message["t"] == "apply":  # its entries follow: whatever goes wrong, they are read to their `end`
                self.apply(message)
                return
            protocol.check_request(message)
            self.handlers[message["t"]](message)

    # --- the requests, in protocol.REQUESTS order ---

    def ping(self, message: dict) -> None:  # the laptop's link keeper checks a kept link before it reuses it
        self.send("pong")

    def facts(self, message: dict) -> None:
        from . import content_index  # lazy: start-up time (only `offload hosts check` asks)
        workdir = message.get("workdir", "~")
        self.send("facts", **facts.collect(workdir),
                  content_index=content_index.summary(os.path.abspath(os.path.expanduser(workdir))))

    def device(self, message: dict) -> None:
        self.send("device", **facts.device_facts())

    def bench(self, message: dict) -> None:
        self.send("bench", **ceiling.measure(message.get("seconds", 10)))

    def prepare(self, message: dict) -> None:
        """A sync begins: it takes the project's sync lock, waiting for another sync."""
        prepared = host_dirs.prepare(message["workdir"], message["project"])
        project_dir = prepared["project_dir"]
        prepared.update(self.receiver.begin(project_dir, bool(message.get("for_run")), WaitNotice(self.send)))
        if message.get("manifest"):  # the laptop scans its side meanwhile: one round trip for both
            prepared.update(self.manifests.reply(project_dir, self.receiver.target(project_dir), message.get("known")))
        self.send("prepared", **prepared)

    def sync_done(self, message: dict) -> None:  # no reply: the laptop does not wait for it
        self.receiver.end_sync()

    def release_tree(self, message: dict) -> None:  # no reply: the run this sync was for will not start
        self.receiver.release_tree(message.get("project_dir"))

    def blocks(self, message: dict) -> None:  # the digests follow the reply as one blob: 64 KiB per GiB, no hex
        found, digests = self.receiver.blocks(message["project_dir"], message["paths"])
        self.send("blocks", found=found, size=len(digests))
        self.out.write(digests)
        self.out.flush()

    def bases(self, message: dict) -> None:
        """For new big files, the files of any project dir here that hold most of their blocks
        (content_index.py); their digests follow the reply as one blob, as `blocks`."""
        from . import content_index  # lazy: start-up time (only a sync with new big files asks)
        workdir = os.path.dirname(self.receiver.target(message["project_dir"]).project_dir)
        found, digests = content_index.find_bases(workdir, message["wanted"])
        self.send("bases", found=found, size=len(digests))
        self.out.write(digests)
        self.out.flush()

    def apply(self, message: dict) -> None:
        """The puts that follow are read through Incoming: a failure leaves them in step."""
        incoming = protocol.Incoming(self.inp)
        try:
            protocol.check_request(message)
            self.send("applied", **self.receiver.apply(message, incoming))
            self.receiver.save_records()  # after the reply: the laptop need not wait for it
        except protocol.ProtocolError:
            raise
        except Exception:
            incoming.skip_to_end()  # the laptop sends all of its puts: the next request starts after `end`
            raise

    def setup_state(self, message: dict) -> None:  # get, or with `state` put, the project's last successful setup
        from . import setup_state  # lazy: start-up time (most sessions never ask)
        if message.get("state") is None:
            self.send("setup_state", state=setup_state.get(message["project_dir"]))
        else:
            self.send("setup_state", state=setup_state.put(message["project_dir"], message["state"]))

    def start(self, message: dict) -> None:
        """A sync for this run holds the live tree: the job's supervisor takes it over."""
        cwd = host_dirs.project_dir_of(message["cwd"], "").rstrip("/")
        started = jobs.start(message, self.receiver.held_trees.get(cwd))
        if not message.get("keep_tree"):
            self.receiver.release_tree(cwd)
        self.send("started", **started)

    def free_port(self, message: dict) -> None:  # node 0 of a multi-node run: where its torchrun serves the rendezvous
        self.send("free_port", port=jobs.free_port())

    def follow(self, message: dict) -> None:
        """With `stdin`, the laptop's stdin goes to the job as it follows (job_stdin.py); the job's end of it
        closes when the follow ends, however it ends."""
        feeder = job_stdin.Feeder(host_dirs.absolute(message["run_dir"], "a run directory"), self.inp, self.send) \
            if message.get("stdin") else None
        try:
            self.next_message = following.follow(message["run_dir"], int(message.get("offset", 0)), self.send, self.out,
                                                 int(message.get("metrics_offset", 0)), bool(message.get("until_now")),
                                                 self.inp if feeder else None, feeder)
        finally:
            if feeder is not None:
                feeder.close()

    def status(self, message: dict) -> None:
        status = run_status.read_status(message["run_dir"])
        # asked by `offload status` only: other callers (a run's end, `running`) need no nvidia-smi of their own
        gpus = gpu_usage.sample_now() if message.get("gpus") and status["state"] == "running" else None
        self.send("status", **status, **({"gpus": gpus} if gpus else {}))

    def stop(self, message: dict) -> None:
        self.send("stopped", **stopping.stop(message["run_dir"], float(message.get("grace", 10))))

    def queue(self, message: dict) -> None:
        lock = os.path.abspath(os.path.expanduser(message["lock"]))  # HOST_LOCK: in the home, as a start's
        self.send("queue", **waiting_line.describe(lock, message.get("clear")))

    def list_files(self, message: dict) -> None:
        from . import fetching  # lazy: start-up time (only `offload fetch` asks)
        self.send("file_list", **fetching.list_files(message["project_dir"], message["patterns"], self.send,
                                                     message.get("run_dir"), bool(message.get("current"))))

    def read_file(self, message: dict) -> None:
        from . import fetching  # lazy: as list_files
        fetching.read_file(message["project_dir"], message["path"], int(message.get("offset", 0)),
                           message.get("end"), self.send, self.out)

    def project_dirs(self, message: dict) -> None:
        from . import cleaning  # lazy: start-up time (only `offload hosts clean` asks)
        self.send("project_dirs", dirs=cleaning.project_dirs(message["workdir"]))

    def remove_project(self, message: dict) -> None:
        from . import cleaning  # lazy: as project_dirs
        self.send("removed_project", **cleaning.remove(message["workdir"], message["name"]))


class WaitNotice:
    """Told once that another sync holds the project, then ticks, so the laptop knows why it waits."""

    def __init__(self, send):
        self.send, self.last = send, None

    def __call__(self) -> None:
        now = time.monotonic()
        if self.last is None:
            self.send("sync_wait")
        elif now - self.last < following.IDLE_TICK_S:
            return
        else:
            self.send("tick")
        self.last = now


def error_code(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
        return "not_writable"
    return "os_error"


def one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


def describe_os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def main() -> None:
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)  # a stray print() in the agent or a library must never corrupt the channel
    sys.stdout = sys.stderr
    os.chdir(os.path.expanduser("~"))
    try:
        # The laptop's stream, read a quarter MiB at a time: a sync of small files is one read for dozens of them.
        Agent(open(0, "rb", buffering=1 << 18, closefd=False), protocol_out).serve()
    except (BrokenPipeError, ConnectionResetError, protocol.ProtocolError, KeyboardInterrupt):
        pass  # the laptop went away; jobs run on, detached


if __name__ == "__main__":
    main()
