"""Time to first line: `offload run hello.py` with a warm link keeper against `ssh host python hello.py`.

    .venv/bin/python bench/bench_first_line.py               # 9 runs of each, alternating
    .venv/bin/python bench/bench_first_line.py --repeat 15

Starts its own sshd on 127.0.0.1 (the tests' fixture) and a project whose hello.py prints one line. One untimed
`offload run hello.py` starts the link keeper and syncs the project; then, alternating, each tool runs the script
on the host: OpenSSH with a fresh connection each time (`ssh -p PORT -i KEY ... host 'cd DIR && PYTHON hello.py'`,
in the directory offload synced to and with the interpreter hosts.yaml names, which offload's job gets too),
`offload run hello.py` through the warm keeper, and, for what the keeper is worth, the same `offload run` in its
own process (OFFLOAD_KEEP_ALIVE=0). Each time is from just before the process is started to the script's line on
its stdout. Prints the median, fastest and slowest of each, and offload's ratio to ssh against the issue's target.
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

from offload.sync.push import project_dir_name  # noqa: E402  (where offload puts a project in its workdir)

HELLO = "print('hello from the host', flush=True)\n"
LINE = b"hello from the host\n"
TARGET_RATIO = 1.2  # issue 12: first line of `offload run` within 1.2x of `ssh host python hello.py`
MIN_REPEAT = 7
FIRST_LINE_DEADLINE_S = 60


class Bench:
    """The sshd, an OFFLOAD_HOME with the one host registered, the project, and the argv of each tool."""

    def __init__(self, server: SshServer, scratch: Path):
        self.server, self.home, self.project = server, scratch / "offload_home", scratch / "proj"
        self.home.mkdir()
        self.project.mkdir()
        (self.project / "hello.py").write_text(HELLO)
        workdir = scratch / "remote"
        known_hosts = self.home / "known_hosts"
        known_hosts.write_text(server.known_hosts_line + "\n")
        (self.home / "hosts.yaml").write_text(
            f"hosts:\n  bench:\n    hostname: {server.host}\n    port: {server.port}\n    user: {server.user}\n"
            f"    identity_file: {server.client_key_path}\n    python: {sys.executable}\n    workdir: {workdir}\n")
        self.env = {**os.environ, "OFFLOAD_HOME": str(self.home), "PYTHONPATH": str(REPO)}
        host_dir = workdir / project_dir_name(self.project)
        # The ssh binary reads ~/.ssh of the passwd entry, not $HOME: every option is given here.
        self.argv = {
            "ssh": ["ssh", "-F", "/dev/null", "-p", str(server.port), "-i", str(server.client_key_path),
                    "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", f"{server.user}@{server.host}", f"cd {host_dir} && {sys.executable} hello.py"],
            "offload": [sys.executable, "-m", "offload", "run", "hello.py"],
            "offload, no keeper": [sys.executable, "-m", "offload", "run", "hello.py"],
        }

    def first_line_s(self, tool: str) -> float:
        """Seconds from starting the tool to the script's line on its stdout; the tool must then exit 0."""
        env = {**self.env, "OFFLOAD_KEEP_ALIVE": "0"} if tool == "offload, no keeper" else self.env
        started = time.perf_counter()
        process = subprocess.Popen(self.argv[tool], cwd=self.project, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = process.stdout.readline()
            took = time.perf_counter() - started
            _, stderr = process.communicate(timeout=FIRST_LINE_DEADLINE_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if line != LINE or process.returncode != 0:
            sys.exit(f"bench: {tool} printed {line!r} and exited {process.returncode}: {stderr.decode()[-800:]}")
        return took

    def stop_keeper(self) -> None:
        subprocess.run([sys.executable, "-m", "offload", "hosts", "disconnect"], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


def print_table(times: dict, repeat: int) -> None:
    print(f"\ntime to first line, {repeat} runs each, alternating (ms)")
    print(f"{'tool':<22}{'median':>9}{'fastest':>9}{'slowest':>9}")
    for tool, seconds in times.items():
        print(f"{tool:<22}{statistics.median(seconds) * 1000:>9.1f}{min(seconds) * 1000:>9.1f}"
              f"{max(seconds) * 1000:>9.1f}")
    ratio = statistics.median(times["offload"]) / statistics.median(times["ssh"])
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(f"\noffload (warm keeper) / ssh: {ratio:.2f}x   target <= {TARGET_RATIO}x: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help=f"runs of each tool (at least {MIN_REPEAT})")
    options = parser.parse_args()
    if options.repeat < MIN_REPEAT:
        parser.error(f"--repeat must be at least {MIN_REPEAT}")
    with tempfile.TemporaryDirectory(prefix="bench_first_line.") as scratch_name, \
            SshServer(Path(scratch_name) / "sshd") as server:
        bench = Bench(server, Path(scratch_name))
        try:
            bench.first_line_s("offload")  # untimed: starts the keeper, syncs the project, installs the agent
            times = {tool: [] for tool in bench.argv}
            for _ in range(options.repeat):
                for tool in times:
                    times[tool].append(bench.first_line_s(tool))
        finally:
            bench.stop_keeper()  # the keeper goes before its sshd and its scratch directory do
    print_table(times, options.repeat)


if __name__ == "__main__":
    main()
