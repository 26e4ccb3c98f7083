"""The tools bench_link.py compares, as argv pipelines into a destination on a Link's host, and one timed run.

Each tool has its own directory on the host (<scratch>/host/<tool>/); offload's is its workdir, where each
project gets its own <name>-<8 hex> directory, and every other tool's copy of a project is <tool dir>/<name>.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from offload.sync.push import project_dir_name  # where offload puts a project in its workdir
from link_memory import PeakMemory
from pipeline import start_pipeline

REPO = Path(__file__).resolve().parent.parent
OFFLOAD, RSYNC, RSYNC_Z, TAR_ZSTD, SSH_PIPE = "offload", "rsync -a", "rsync -az", "tar|zstd -1|ssh", "ssh cat"
TOOL_DIRS = {OFFLOAD: "offload", RSYNC: "rsync_a", RSYNC_Z: "rsync_az", TAR_ZSTD: "tar_zstd", SSH_PIPE: "ssh_cat"}


@dataclass
class Run:
    seconds: float
    wire_bytes: int
    laptop_peak: int = 0  # offload's only: the highest VmHWM, bytes (link_memory.py)
    host_peak: int = 0


class Tools:
    def __init__(self, link, scratch: Path):
        self.link, self.scratch = link, scratch
        scratch.mkdir(parents=True)
        server = link.server
        self.known_hosts = scratch / "known_hosts"
        self.known_hosts.write_text(server.known_hosts_line + "\n")
        # The ssh binary reads ~/.ssh of the passwd entry, not $HOME: every option is given here.
        self.ssh = ["ssh", "-p", str(server.port), "-i", str(server.client_key_path),
                    "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", f"{server.user}@{server.host}"]
        self.homes = 0
        self.home = None
        self.fresh_home()

    def fresh_home(self) -> None:
        """A new OFFLOAD_HOME (hosts.yaml, known_hosts, no link keeper yet): each case starts from nothing."""
        self.stop_keeper()
        self.homes += 1
        self.home = self.scratch / f"offload_home{self.homes}"
        self.home.mkdir()
        shutil.copyfile(self.known_hosts, self.home / "known_hosts")
        server = self.link.server
        (self.home / "hosts.yaml").write_text(
            f"hosts:\n  bench:\n    hostname: {server.host}\n    port: {server.port}\n"
            f"    user: {server.user}\n    identity_file: {server.client_key_path}\n"
            f"    python: {sys.executable}\n    workdir: {self.tool_dir(OFFLOAD)}\n")

    def stop_keeper(self) -> None:
        """`offload hosts disconnect` ends the link keeper the last home's syncs left (by the pid it wrote)."""
        if self.home is not None:
            subprocess.run([sys.executable, "-m", "offload", "hosts", "disconnect"],
                           env=self.env(), check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def env(self) -> dict:
        """This checkout's offload (not whichever one is installed), with the case's own OFFLOAD_HOME."""
        python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "OFFLOAD_HOME": str(self.home), "PYTHONPATH": python_path}

    def tool_dir(self, tool: str) -> Path:
        return self.scratch / "host" / TOOL_DIRS[tool]

    def copy_of(self, tool: str, source: Path) -> Path:
        """Where tool's copy of the project at source is on the host."""
        if tool == OFFLOAD:
            return self.tool_dir(tool) / project_dir_name(source)
        return self.tool_dir(tool) / source.name

    def commands(self, tool: str, source: Path) -> list:
        destination = self.copy_of(tool, source)
        remote = shlex.quote(str(destination))
        if tool == OFFLOAD:
            return [[sys.executable, "-m", "offload", "sync", "--project", str(source)]]
        if tool in (RSYNC, RSYNC_Z):
            flags = "-a" if tool == RSYNC else "-az"
            return [["rsync", flags, "--mkpath", "--delete", "-e", shlex.join(self.ssh[:-1]), f"{source}/",
                     f"{self.ssh[-1]}:{destination}/"]]
        if tool == TAR_ZSTD:
            return [["tar", "c", "-C", str(source), "."], ["zstd", "-1", "-q", "-c"],
                    [*self.ssh, f"mkdir -p {remote} && zstd -d -q -c | tar x -C {remote}"]]
        if tool == SSH_PIPE:  # one file: the OpenSSH ceiling for a stream of bytes
            (only_file,) = [path for path in source.iterdir() if path.is_file()]
            return [["cat", str(only_file)],
                    [*self.ssh, f"mkdir -p {remote} && cat > {remote}/{shlex.quote(only_file.name)}"]]
        raise ValueError(tool)

    def sync(self, tool: str, source: Path) -> Run:
        return self.measured(self.commands(tool, source))

    def measured(self, commands: list) -> Run:
        """Run commands as a pipeline; wall time and the link's byte counters' delta. Dirty pages are
        flushed first, so no tool pays for the writeback of the one before."""
        os.sync()
        wire_before = self.link.wire_bytes()
        env = self.env()
        started = time.perf_counter()
        processes = start_pipeline(commands, env, last_stderr=subprocess.PIPE)
        is_offload = commands[0][2:3] == ["offload"]
        memory = PeakMemory(processes[0].pid, self.home / "keeper.pid").start() if is_offload else None
        try:
            errors = processes[-1].communicate()[1]
            codes = [process.wait() for process in processes]
        except BaseException:  # Ctrl-C or a signal: no tool outlives the bench
            for process in processes:
                process.kill()
                process.wait()
            raise
        finally:
            if memory is not None:
                memory.stop()
        run = Run(time.perf_counter() - started, self.link.wire_bytes() - wire_before,
                  *((memory.laptop, memory.host) if memory is not None else ()))
        if any(codes):
            raise RuntimeError(f"{commands[0][:5]}... exited with {codes}: {errors.decode(errors='replace')[-2000:]}")
        return run
