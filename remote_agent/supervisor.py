"""Supervisor of one job: `python -m remote_agent.supervisor RUN_DIR`, started in a session of its own.

It starts the job (in a process group of its own, so `stop` can signal the job and everything it spawned),
sends stdout and stderr, in order, to output.log, and records pid, start, end and exit in status.json.

With a `lock` in job.json it first takes the host's GPU lock (see hostlock.py) and the job inherits it, so the
lock lasts as long as the job, even if the supervisor is killed; runs waiting for it start in the order they
came (waiting_line.py): meanwhile the state is "waiting" (with the run that holds it as `holder`, and our
`place` in the line), or, told not to wait, "busy", and the job never starts. SIGTERM means
stop: before the job has started, give up waiting; after, pass it on to the job and record how it ended, once
the files it wrote are recorded (see outputs.py).

Whatever else ends the supervisor (a full disk refusing status.json, a bug) is written to supervisor.err (see
supervisor_error.py), which the laptop is shown as the run's state, `failed`; a job the supervisor can no longer
record is stopped first, never left running with nobody to say so.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from . import durable, hostlock, journals, job_stdin, on_exit, outputs, supervisor_error, tree, waiting_line
from .fence import OutsideProject
from .run_status import JOB, LOG, METRICS, STATUS, now

LOCK_POLL_S = 0.1  # how soon a freed lock is taken; the kernel frees it the moment its holder exits
HOLDER_GRACE_S = 2.0  # how long to wait for a new holder to write who it is before reporting it unknown
FAILED_JOB_GRACE_S = 5.0  # SIGTERM to SIGKILL, for a job stopped because its supervisor failed


class Supervisor:
    def __init__(self, run_dir: str, job: dict):
        self.run_dir, self.job = run_dir, job
        self.run_id = job.get("run_id") or os.path.basename(run_dir)
        self.status_path = os.path.join(run_dir, STATUS)
        self.status = {"state": "starting", "supervisor_pid": os.getpid(), "queued_at": now(), "argv": job["argv"],
                       "lock": job.get("lock"), "pid": None, "pgid": None}
        self.stop_signal = None
        self.job_pgid = None
        self.tree_fd = None
        self.lock = None  # the GPU lock, once held
        self.holder_note = None  # what <lock>.json says of this run
        self.job_end = None  # how the job ended, for a failure of the supervisor after it started
        self.stdin_fd = None  # a followed job's stdin (job_stdin.py), opened before any wait; else /dev/null

    def on_stop(self, signum, frame) -> None:
        self.stop_signal = signum
        if self.job_pgid is not None:
            try:
                os.killpg(self.job_pgid, signum)
            except ProcessLookupError:
                pass

    def record(self, **fields) -> None:
        self.status.update(fields)
        try:
            durable.write_json_durably(self.status_path, self.status)
        except OSError as exc:  # named, for supervisor.err: the temporary file that failed means nothing to users
            raise OSError(exc.errno, f"cannot record the run's status: {exc.strerror}", self.status_path) from exc

    def run(self) -> int:
        open(os.path.join(self.run_dir, LOG), "ab").close()  # there to follow from the first status on, job or not
        if self.job.get("stdin"):  # before the first status: the laptop writes to it once it hears one
            self.stdin_fd = job_stdin.open_for_job(self.run_dir)
        tree_job = self.job.get("tree")
        self.tree_fd = tree_job.get("fd") if tree_job else None
        try:
            if not self.job.get("lock"):
                if tree_job and self.tree_fd is None:
                    self.tree_fd = tree.lock_waiting(self.tree_lock_path(), lambda: None)
                return self.run_in_tree()
            lock = hostlock.HostLock(self.job["lock"])
            try:
                try:
                    taken = self.take(lock)
                except OSError as exc:
                    self.record(state="exited", ended_at=now(), exit_code=None, signal=None,
                                error=f"cannot use the GPU lock {self.job['lock']}: {exc.strerror or exc}")
                    return 1
                if not taken:
                    self.drop_stage()
                self.lock = lock if taken else None
                return self.run_in_tree() if taken else 0
            finally:
                lock.release()  # after the exit is recorded: whoever waits starts only once this run has ended
        finally:
            tree.unlock(self.tree_fd)

    def tree_lock_path(self) -> str:
        return os.path.join(self.job["tree"]["project_dir"], tree.TREE_LOCK)

    def try_locks(self, lock) -> bool:
        """The GPU lock and, for a job in a synced tree, the tree's lock; both or neither. Never holding one
        while waiting for the other is what keeps two runs of one project from waiting on each other."""
        if not lock.try_acquire():
            return False
        if self.job.get("tree") and self.tree_fd is None:
            self.tree_fd = tree.try_lock(self.tree_lock_path())
            if self.tree_fd is None:  # a sync or a job of this project has the tree: let the GPU go meanwhile
                lock.release()
                return False
        return True

    def run_in_tree(self) -> int:
        """Switch the run's staged tree in (if its sync made one), run the job, then let a plain sync staged
        meanwhile go in."""
        tree_job = self.job.get("tree")
        if not tree_job:
            return self.run_job()
        project_dir = tree_job["project_dir"]
        try:
            journals.finish_patches(project_dir)  # never start a job on a half-patched file
            if tree_job.get("stage"):
                self.note_kept(tree.switch_in(project_dir, tree.Stage(project_dir, tree_job["stage"]),
                                              consume=bool(tree_job.get("consume"))))
        except (OSError, ValueError, OutsideProject) as exc:
            self.record(state="exited", started_at=now(), ended_at=now(), exit_code=None, signal=None,
                        error=f"cannot put the run's synced files in place: {exc}")
            return 1
        try:
            return self.run_job()
        finally:
            if tree_job.get("consume"):  # the run, not its setup: a sync staged meanwhile may go in now
                try:
                    tree.settle(project_dir)
                except (OSError, ValueError, OutsideProject):
                    pass  # the staged sync stays staged; the next job's end tries again

    def drop_stage(self) -> None:
        """A run that will never start (busy, or stopped while waiting) has no use for its staged tree."""
        tree_job = self.job.get("tree") or {}
        if tree_job.get("stage") and tree_job.get("consume"):
            tree.Stage(tree_job["project_dir"], tree_job["stage"]).remove()

    def note_kept(self, kept: list) -> None:
        if kept:
            with open(os.path.join(self.run_dir, LOG), "ab") as log:
                for relpath, why in kept:
                    log.write(f"offload: kept {relpath}: {why}; the run uses the host's version\n".encode())

    def take(self, lock) -> bool:
        """Our turn in the line, then the lock (told not to wait: both now, or give up); True once we hold it."""
        note = hostlock.holder_details(self.run_id, self.run_dir, self.job.get("laptop"), self.job["argv"])
        ticket = waiting_line.take_ticket(lock.path, {**note, "submitted": self.status["queued_at"]})
        try:
            taken = self.wait_turn(lock, ticket)
        finally:
            waiting_line.leave(ticket)  # holding the lock, or given up: the next in line goes next
        if taken:
            self.holder_note = {**note, "since": now()}  # since it holds the lock, not since it was submitted
            lock.announce(self.holder_note)
        return taken

    def wait_turn(self, lock, ticket: str) -> bool:
        known_holder, holder_deadline = None, time.monotonic() + HOLDER_GRACE_S
        while True:
            ahead = waiting_line.ahead_of(ticket, lock.path)
            if not ahead and self.try_locks(lock):
                break
            if self.stop_signal is not None:
                self.record_stopped_while_waiting()
                return False
            holder = lock.holder()
            if holder is not None or ahead or time.monotonic() > holder_deadline:
                if not self.job.get("wait", True):
                    self.record(state="busy", holder=holder, ended_at=now(), exit_code=None, signal=None)
                    return False
                changed = holder is not None and not same_run(holder, known_holder)
                if self.status["state"] != "waiting" or changed or self.status.get("place") != len(ahead) + 1:
                    known_holder = holder or known_holder
                    self.record(state="waiting", holder=known_holder, place=len(ahead) + 1)
            time.sleep(LOCK_POLL_S)
        if self.stop_signal is not None:  # stopped just as the lock came free
            self.record_stopped_while_waiting()
        return self.stop_signal is None

    def record_stopped_while_waiting(self) -> None:
        self.record(state="exited", ended_at=now(), exit_code=None, signal=signal.Signals(self.stop_signal).name,
                    note="stopped while waiting for the GPU lock", stopped_waiting=True)  # the job never started

    def run_job(self) -> int:
        job = self.job
        env = dict(os.environ)
        env.update(job["env"])
        # The job holds its tree and the GPU lock too, so both last as long as it does, supervisor or not.
        held = tuple(fd for fd in (self.tree_fd, self.lock.fd if self.lock else None) if fd is not None)
        with open(os.path.join(self.run_dir, LOG), "ab") as log:
            before = outputs.snapshot(job["cwd"])  # what the project's out*/ held, so the run's record is its own
            try:
                proc = subprocess.Popen(
                    job["argv"], cwd=job["cwd"], env=env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL if self.stdin_fd is None else self.stdin_fd,
                    preexec_fn=os.setpgrp, close_fds=True, pass_fds=held,
                )
            except OSError as exc:
                log.write(f"offload: cannot start {job['argv'][0]}: {exc.strerror}\n".encode())
                log.flush()  # in the log before the status says it exited: whoever reads it then finds the line
                self.record(state="exited", started_at=now(), ended_at=now(), exit_code=127, signal=None,
                            error=f"cannot start {job['argv'][0]}: {exc.strerror}")
                return 127
            finally:
                if self.stdin_fd is not None:  # the job's own now: its EOF must not wait for this process
                    os.close(self.stdin_fd)
        self.job_pgid = proc.pid
        try:
            return self.supervise(proc, before)
        except BaseException:
            self.end_failed_job(proc)
            raise

    def supervise(self, proc, before: dict) -> int:
        job = self.job
        if self.stop_signal is not None:  # a stop that came while the job was being started
            self.on_stop(self.stop_signal, None)
        if self.lock is not None:  # a waiter believes the note while this group lives, even once we are gone
            self.lock.announce({**self.holder_note, "pgid": proc.pid})
        waited_s = round(time.time() - self.status["queued_at"], 3)
        self.record(state="running", started_at=now(), pid=proc.pid, pgid=proc.pid, waited_s=waited_s)
        started = time.monotonic()
        returncode = proc.wait()
        wall_s = time.monotonic() - started
        self.job_end = f"its job had exited with code {returncode}" if returncode >= 0 else \
            f"its job had been killed by {signal.Signals(-returncode).name}"
        try:
            outputs.record(self.run_dir, self.run_id, before)  # then "exited"
        except Exception:  # noqa: BLE001 - the exit must be recorded whatever; fetch then says the versions are unknown
            pass
        if job.get("on_exit"):
            self.run_on_exit(job, returncode, wall_s)
        self.record(state="exited", ended_at=now(), exit_code=returncode if returncode >= 0 else None,
                    signal=signal.Signals(-returncode).name if returncode < 0 else None)
        return 0

    def run_on_exit(self, job: dict, returncode: int, wall_s: float) -> None:
        """The run's on_exit hook (on_exit.py); whatever it does, the job's exit is recorded next."""
        ended = {"run_id": self.run_id, "wall_s": wall_s,
                 "exit_code": returncode if returncode >= 0 else None,
                 "signal": signal.Signals(-returncode).name if returncode < 0 else None}
        log_path = os.path.join(self.run_dir, LOG)
        try:
            with open(log_path, "ab") as log:
                on_exit.run_hook(job["on_exit"], job, log, os.path.join(self.run_dir, METRICS), log_path, ended)
        except Exception:  # noqa: BLE001 - a hook's trouble (a full disk) never stands between the job and its record
            pass

    def end_failed_job(self, proc) -> None:
        """The supervisor failed while its job runs: nobody could record it, so it must not run on."""
        if proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGKILL also takes what the job left in its group
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=FAILED_JOB_GRACE_S)
            except subprocess.TimeoutExpired:
                continue
        self.job_end = "its job was stopped"


def same_run(a: dict | None, b: dict | None) -> bool:
    return a is not None and b is not None and (a.get("run_dir"), a.get("supervisor_pid")) == \
        (b.get("run_dir"), b.get("supervisor_pid"))


def describe_failure(exc: BaseException, supervisor: Supervisor | None) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        what = exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    else:
        what = f"{type(exc).__name__}: {exc}"
    job_end = supervisor.job_end if supervisor is not None else None
    return f"the supervisor failed: {what}" + (f"; {job_end}" if job_end else "")


def main(run_dir: str) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    error_note = supervisor_error.ErrorNote(run_dir)  # its room taken before anything can fill the disk
    supervisor = None
    try:
        with open(os.path.join(run_dir, JOB)) as f:
            job = json.load(f)
        supervisor = Supervisor(run_dir, job)
        signal.signal(signal.SIGTERM, supervisor.on_stop)  # before any status is written: `stop` reads it first
        code = supervisor.run()
    except BaseException as exc:  # noqa: BLE001 - whatever ends the supervisor must reach the laptop
        error_note.write(describe_failure(exc, supervisor))
        return 1
    error_note.discard()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
