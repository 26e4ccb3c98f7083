"""Supervisor of one job: `python -m remote_agent.supervisor RUN_DIR`, started in a session of its own.

It starts the job (in a process group of its own, so `stop` can signal the job and everything it spawned),
sends stdout and stderr, in order, to output.log, and records pid, start, end and exit in status.json.

With a `lock` in job.json it first takes the host's GPU lock (see hostlock.py) and holds it for the job's whole
life: while another run holds it the state is "waiting" (with that run as `holder`), or, told not to wait,
"busy", and the job never starts. SIGTERM means stop: before the job has started, give up waiting; after, pass
it on to the job and record how it ended, once the files it wrote are recorded (see outputs.py).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from . import hostlock, outputs
from .jobs import JOB, LOG, STATUS, now, write_json

LOCK_POLL_S = 0.1  # how soon a freed lock is taken; the kernel frees it the moment its holder exits
HOLDER_GRACE_S = 2.0  # how long to wait for a new holder to write who it is before reporting it unknown


class Supervisor:
    def __init__(self, run_dir: str, job: dict):
        self.run_dir, self.job = run_dir, job
        self.status_path = os.path.join(run_dir, STATUS)
        self.status = {"state": "starting", "supervisor_pid": os.getpid(), "queued_at": now(), "argv": job["argv"],
                       "lock": job.get("lock"), "pid": None, "pgid": None}
        self.stop_signal = None
        self.job_pgid = None

    def on_stop(self, signum, frame) -> None:
        self.stop_signal = signum
        if self.job_pgid is not None:
            try:
                os.killpg(self.job_pgid, signum)
            except ProcessLookupError:
                pass

    def record(self, **fields) -> None:
        self.status.update(fields)
        write_json(self.status_path, self.status)

    def run(self) -> int:
        open(os.path.join(self.run_dir, LOG), "ab").close()  # there to follow from the first status on, job or not
        if not self.job.get("lock"):
            return self.run_job()
        lock = hostlock.HostLock(self.job["lock"])
        try:
            try:
                taken = self.take(lock)
            except OSError as exc:
                self.record(state="exited", ended_at=now(), exit_code=None, signal=None,
                            error=f"cannot use the GPU lock {self.job['lock']}: {exc.strerror or exc}")
                return 1
            return self.run_job() if taken else 0
        finally:
            lock.release()  # after the exit is recorded: whoever waits starts only once this run has ended

    def take(self, lock) -> bool:
        """Wait for the lock (or, told not to wait, give up at once); True once we hold it."""
        known_holder, holder_deadline = None, time.monotonic() + HOLDER_GRACE_S
        while not lock.try_acquire():
            if self.stop_signal is not None:
                self.record_stopped_while_waiting()
                return False
            holder = lock.holder()
            if holder is not None or time.monotonic() > holder_deadline:
                if not self.job.get("wait", True):
                    self.record(state="busy", holder=holder, ended_at=now(), exit_code=None, signal=None)
                    return False
                if self.status["state"] != "waiting" or (holder is not None and not same_run(holder, known_holder)):
                    known_holder = holder or known_holder
                    self.record(state="waiting", holder=known_holder)
            time.sleep(LOCK_POLL_S)
        if self.stop_signal is not None:  # stopped just as the lock came free
            self.record_stopped_while_waiting()
            return False
        lock.announce(hostlock.holder_details(self.job.get("run_id") or os.path.basename(self.run_dir),
                                              self.run_dir, self.job.get("laptop"), self.job["argv"]))
        return True

    def record_stopped_while_waiting(self) -> None:
        self.record(state="exited", ended_at=now(), exit_code=None, signal=signal.Signals(self.stop_signal).name,
                    note="stopped while waiting for the GPU lock")

    def run_job(self) -> int:
        job = self.job
        env = dict(os.environ)
        env.update(job["env"])
        with open(os.path.join(self.run_dir, LOG), "ab") as log:
            before = outputs.snapshot(job["cwd"])  # what the project's out*/ held, so the run's record is its own
            try:
                proc = subprocess.Popen(
                    job["argv"], cwd=job["cwd"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, preexec_fn=os.setpgrp, close_fds=True,
                )
            except OSError as exc:
                log.write(f"offload: cannot start {job['argv'][0]}: {exc.strerror}\n".encode())
                self.record(state="exited", started_at=now(), ended_at=now(), exit_code=127, signal=None,
                            error=f"cannot start {job['argv'][0]}: {exc.strerror}")
                return 127
        self.job_pgid = proc.pid
        if self.stop_signal is not None:  # a stop that came while the job was being started
            self.on_stop(self.stop_signal, None)
        waited_s = round(time.time() - self.status["queued_at"], 3)
        self.record(state="running", started_at=now(), pid=proc.pid, pgid=proc.pid, waited_s=waited_s)
        returncode = proc.wait()
        outputs.record(self.run_dir, job.get("run_id") or os.path.basename(self.run_dir), before)  # then "exited"
        self.record(state="exited", ended_at=now(), exit_code=returncode if returncode >= 0 else None,
                    signal=signal.Signals(-returncode).name if returncode < 0 else None)
        return 0


def same_run(a: dict | None, b: dict | None) -> bool:
    return a is not None and b is not None and (a.get("run_dir"), a.get("supervisor_pid")) == \
        (b.get("run_dir"), b.get("supervisor_pid"))


def main(run_dir: str) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with open(os.path.join(run_dir, JOB)) as f:
        job = json.load(f)
    supervisor = Supervisor(run_dir, job)
    signal.signal(signal.SIGTERM, supervisor.on_stop)  # before any status is written: `stop` reads it first
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
