"""Sync benchmark: `offload sync` against `rsync -a` over the same loopback OpenSSH, medians and ratios.

    .venv/bin/python bench/bench_sync.py [--project DIR] [--repeat N]

Starts its own sshd on 127.0.0.1 (the tests' fixture code), syncs DIR (default: this repository) with
both tools into separate directories, and prints the median wall time of each case and offload's
ratio to rsync. rsync gets the same exclusions (.gitignore rules and the always-excluded directories).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from sshd_server import SshServer  # noqa: E402  (the tests' real-sshd fixture, reused)

ALWAYS_EXCLUDED = [".git/", "__pycache__/", ".venv/", "venv/", ".offload/"]


def timed(argv: list, env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=REPO)
    parser.add_argument("--repeat", type=int, default=7)
    options = parser.parse_args()
    project = options.project.resolve()
    with tempfile.TemporaryDirectory() as scratch_name, SshServer(Path(scratch_name) / "sshd") as server:
        scratch = Path(scratch_name)
        home = scratch / "offload_home"
        home.mkdir()
        (home / "known_hosts").write_text(server.known_hosts_line + "\n")
        (home / "hosts.yaml").write_text(
            f"hosts:\n  bench:\n    hostname: {server.host}\n    port: {server.port}\n    user: {server.user}\n"
            f"    identity_file: {server.client_key_path}\n    python: {sys.executable}\n"
            f"    workdir: {scratch / 'offload-remote'}\n")
        env = {**os.environ, "OFFLOAD_HOME": str(home)}
        offload = [sys.executable, "-m", "offload", "sync", "--project", str(project)]
        ssh = (f"ssh -p {server.port} -i {server.client_key_path} -o UserKnownHostsFile={home / 'known_hosts'} "
               "-o StrictHostKeyChecking=yes -o BatchMode=yes")
        rsync = ["rsync", "-a", "--delete", "-e", ssh, "--filter=:- .gitignore",
                 *[f"--exclude={d}" for d in ALWAYS_EXCLUDED], f"{project}/",
                 f"{server.user}@{server.host}:{scratch / 'rsync-remote'}/"]
        cases = {"first sync": (timed(offload, env, project), timed(rsync, env, project))}
        unchanged = [(timed(offload, env, project), timed(rsync, env, project)) for _ in range(options.repeat)]
        cases["nothing changed"] = tuple(statistics.median(column) for column in zip(*unchanged))
    print(f"{project} over loopback OpenSSH, median of {options.repeat} (first sync: one run)")
    print(f"{'case':<18}{'offload':>10}{'rsync -a':>10}{'ratio':>8}")
    for case, (offload_s, rsync_s) in cases.items():
        print(f"{case:<18}{offload_s:>9.3f}s{rsync_s:>9.3f}s{offload_s / rsync_s:>7.2f}x")


if __name__ == "__main__":
    main()
