"""Supervisor of one job: `python -m remote_agent.supervisor RUN_DIR`, started in a session of its own.

It starts the job (in a process group of its own, so `stop` can signal the job and everything it spawned),
sends stdout and stderr, in order, to output.log, and records pid, start, end and exit in status.json.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from .jobs import JOB, LOG, STATUS, now, write_json


def main(run_dir: str) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with open(os.path.join(run_dir, JOB)) as f:
        job = json.load(f)
    env = dict(os.environ)
    env.update(job["env"])
    status_path = os.path.join(run_dir, STATUS)
    status = {"state": "running", "supervisor_pid": os.getpid(), "started_at": now(), "argv": job["argv"]}
    with open(os.path.join(run_dir, LOG), "ab") as log:
        try:
            proc = subprocess.Popen(
                job["argv"], cwd=job["cwd"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=os.setpgrp, close_fds=True,
            )
        except OSError as exc:
            log.write(f"offload: cannot start {job['argv'][0]}: {exc.strerror}\n".encode())
            status.update(state="exited", pid=None, pgid=None, ended_at=now(), exit_code=127, signal=None,
                          error=f"cannot start {job['argv'][0]}: {exc.strerror}")
            write_json(status_path, status)
            return 127
    status.update(pid=proc.pid, pgid=proc.pid)
    write_json(status_path, status)
    returncode = proc.wait()
    status.update(state="exited", ended_at=now(), exit_code=returncode if returncode >= 0 else None,
                  signal=signal.Signals(-returncode).name if returncode < 0 else None)
    write_json(status_path, status)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
