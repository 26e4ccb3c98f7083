"""What bench_link.py syncs: a nanoGPT-style ML project, a real source tree, big and many-file loopback trees;
the edits between syncs; and a digest of a tree, so every copy is checked byte for byte.

The ML project (about 301 MB in 33 files): examples/chargpt's code and generated configs, input.txt, a 200 MB
uint16 token file (tinyshakespeare encoded by character, as nanoGPT's prepare.py does) and a 100 MB float32
tensor of normal samples (random mantissas: barely compressible, as trained weights are).
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
import sysconfig
from pathlib import Path

import numpy

from small_files import make_small_files

from offload.sync.selection import select_project  # what offload sends: the source tree is pruned to it

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"  # used when present, else a stand-in
TOKEN_BYTES = 200 * 10**6
TENSOR_BYTES = 100 * 10**6
CONFIG_FILES = 25           # generated config/train_*.py, so the project has as many files as a real one
CHUNK = 8 << 20             # big files are written this much at a time, never whole in memory
SOURCE_FILES_MIN = 10_000   # the source tree: the stdlib's sources, topped up with site-packages' .py files
NOT_SOURCES = ("config-", "lib-dynload", "site-packages", "__pycache__")  # binaries, caches, installed packages
SMALL_FILES = 100_000       # loopback many-files tree: 400 MB in all ...
SMALL_SIZE = (2048, 6144)   # ... each of a random size in this range
SMALL_PER_DIR = 500
CHANGED_BYTES = 1 << 20
HOST_STATE = ".offload"     # offload's own records in a project directory on the host: not the user's files


def shakespeare_text() -> tuple[str, str]:
    """(the text, where it came from): the real file, or a stand-in with its alphabet, line and word shape."""
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(), str(SHAKESPEARE)
    rng = random.Random(0)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9,
               1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]
    words = ["".join(rng.choices(letters, weights, k=rng.randint(1, 8))) for _ in range(12_000)]
    zipf = [1 / rank for rank in range(1, len(words) + 1)]  # words are as unevenly common as in real text
    lines = []
    while sum(map(len, lines)) < 1_115_000:  # tinyshakespeare's size
        line = " ".join(rng.choices(words, zipf, k=rng.randint(2, 9)))
        lines.append(line[0].upper() + line[1:] + rng.choice([",", ".", ";", ":", "!", "?", ""]))
        if rng.random() < 0.15:
            lines.append("\n" + rng.choice(words).upper() + ":")
    return "\n".join(lines) + "\n", "a generated stand-in (tinyshakespeare.txt not found)"


def write_repeated(path: Path, unit: bytes, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        for offset in range(0, size, len(unit)):
            file.write(unit[:size - offset])


def make_ml_project(root: Path, scale: float = 1.0) -> str:
    """Build the project under root (its two big files at scale of their size); return where its text came from."""
    text, source = shakespeare_text()
    for path in (REPO / "examples" / "chargpt").rglob("*.py"):
        (root / path.relative_to(REPO / "examples" / "chargpt")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / path.relative_to(REPO / "examples" / "chargpt"))
    for index in range(CONFIG_FILES):
        (root / "config" / f"train_{index:02d}.py").write_text(
            f"# sweep point {index}\nlearning_rate = {1e-3 * (index + 1):.4f}\nn_layer = {4 + index % 4}\n"
            f"dropout = {index % 5 / 10}\nmax_iters = {2000 + 250 * index}\n")
    data = root / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    (data / "input.txt").write_text(text)
    vocabulary = sorted(set(text))
    (data / "meta.txt").write_text("".join(vocabulary))
    lookup = {char: code for code, char in enumerate(vocabulary)}
    write_repeated(data / "train.bin", numpy.array([lookup[c] for c in text], dtype=numpy.uint16).tobytes(),
                   int(TOKEN_BYTES * scale))
    rng, tensor_bytes = numpy.random.default_rng(0), int(TENSOR_BYTES * scale) // 4 * 4
    with open(root / "data" / "embeddings.f32", "wb") as file:
        for offset in range(0, tensor_bytes, CHUNK):
            file.write(rng.standard_normal(min(CHUNK, tensor_bytes - offset) // 4, dtype=numpy.float32).tobytes())
    return source


def make_source_tree(root: Path) -> str:
    """The stdlib's sources (no binaries, caches or installed packages), topped up to SOURCE_FILES_MIN files
    with site-packages' .py files, then pruned to what offload's own selection sends (it leaves out *.pem
    and the like), so every tool copies the same files."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [(path, path.relative_to(stdlib)) for path in sorted(stdlib.rglob("*")) if path.is_file()
               and not any(part.startswith(NOT_SOURCES) for part in path.relative_to(stdlib).parts)]
    wanted = max(0, SOURCE_FILES_MIN + 500 - len(sources))  # 500 more: the pruning below takes a few
    sites = dict.fromkeys([stdlib / "site-packages", Path(sysconfig.get_paths()["purelib"])])  # base's, venv's
    extra = [(path, Path(f"site{index}") / path.relative_to(site)) for index, site in enumerate(sites)
             for path in sorted(site.rglob("*.py")) if "__pycache__" not in path.parts][:wanted]
    for path, name in sources + extra:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, root / name)
    kept = {entry.path for entry in select_project(root).entries}
    for path in [path for path in root.rglob("*") if path.is_file() or path.is_symlink()]:
        if path.relative_to(root).as_posix() not in kept:
            path.unlink()
    files = sum(1 for path in root.rglob("*") if path.is_file())
    return (f"{files} files: {len(sources)} stdlib sources from {stdlib} and {len(extra)} .py files of "
            f"{', '.join(map(str, sites))}, less what offload's selection leaves out")


def make_big_file(root: Path, size: int) -> None:
    root.mkdir(parents=True)
    with open(root / "random.bin", "wb") as file:
        for offset in range(0, size, CHUNK):
            file.write(os.urandom(min(CHUNK, size - offset)))


def make_many_files(root: Path) -> None:
    make_small_files(root, SMALL_FILES, SMALL_SIZE, SMALL_PER_DIR)


def change_middle(path: Path) -> None:
    """Rewrite CHANGED_BYTES in the middle of path with new random bytes (so also a new mtime)."""
    with open(path, "r+b") as file:
        file.seek(max(0, path.stat().st_size // 2 - CHANGED_BYTES // 2))
        file.write(os.urandom(CHANGED_BYTES))


def reclone(root: Path) -> None:
    """Delete the project and make it again at the same path: same content, every mtime and inode new."""
    clone = root.with_name(root.name + ".clone")
    shutil.copytree(root, clone, copy_function=shutil.copyfile)
    shutil.rmtree(root)
    clone.rename(root)


def copy_tree(source: Path, destination: Path) -> None:
    """A copy with mtimes and modes (a host's state kept to start each repetition from)."""
    shutil.rmtree(destination, ignore_errors=True)
    shutil.copytree(source, destination, symlinks=True)


def tree_digest(root: Path) -> tuple[str, int, int]:
    """(sha256 over every file's path and content and every link's target, files, bytes); offload's host
    records are skipped, and so are directories (empty ones carry no content)."""
    digest, files, total = hashlib.sha256(), 0, 0
    for directory, dirnames, names in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if not (directory == str(root) and name == HOST_STATE))
        for name in sorted(names):
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                digest.update(f"L {relative}\0{os.readlink(path)}\0".encode())
                continue
            with open(path, "rb") as file:
                content = hashlib.file_digest(file, "sha256").hexdigest()
            digest.update(f"F {relative}\0{content}\0".encode())
            files, total = files + 1, total + path.stat().st_size
    return digest.hexdigest(), files, total


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
