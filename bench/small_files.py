"""A seeded tree of many small random files, the same on every run: the per-file cost of a sync, measured."""
from __future__ import annotations

import os
import random
from pathlib import Path


def make_small_files(root: Path, count: int, sizes: tuple, per_dir: int) -> None:
    """count files, each of a random size in the inclusive range sizes, per_dir to a directory (so no directory
    holds them all)."""
    chosen = random.Random(0).choices(range(sizes[0], sizes[1] + 1), k=count)
    for index, size in enumerate(chosen):
        directory = root / f"d{index // per_dir:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index:06d}.bin").write_bytes(os.urandom(size))
