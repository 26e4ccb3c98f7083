"""Start a shell-style pipeline of commands (each one's stdout into the next), as the benchmarks time them."""
from __future__ import annotations

import subprocess


def start_pipeline(commands: list, env: dict, last_stderr=subprocess.DEVNULL, others_stderr=None) -> list:
    """The started processes, in order: the first reads nothing, the last writes its stdout nowhere; stderr goes
    to last_stderr for the last and to others_stderr (None: this process's own) for the rest."""
    processes, upstream = [], subprocess.DEVNULL
    for index, argv in enumerate(commands):
        last = index == len(commands) - 1
        process = subprocess.Popen(argv, env=env, stdin=upstream, stderr=last_stderr if last else others_stderr,
                                   stdout=subprocess.DEVNULL if last else subprocess.PIPE)
        if process.stdout is not None:
            upstream = process.stdout
        processes.append(process)
    for process in processes[:-1]:
        process.stdout.close()  # the next process holds its own copy; an early exit then reaches the writer
    return processes
