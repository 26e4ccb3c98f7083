"""`supervisor.err` in a run directory: why a supervisor failed (a full disk, a bug), in one line for the laptop.

Its room is taken when the supervisor starts (a hidden file of RESERVED_BYTES), so a disk that fills up later can
still take the line: writing it overwrites bytes the file already has, then renames it into place. The file
exists only when the supervisor failed; a supervisor that ended well removes its reserved room.
"""
from __future__ import annotations

import os

SUPERVISOR_ERR = "supervisor.err"
RESERVED_BYTES = 4096  # a filesystem block: far more than one line needs
MAX_LINE = 1000


class ErrorNote:
    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, SUPERVISOR_ERR)
        self.room_path = os.path.join(run_dir, f".{SUPERVISOR_ERR}.room")
        try:
            with open(self.room_path, "wb") as room:
                room.write(b" " * RESERVED_BYTES)
        except OSError:
            pass  # no room now: write() still tries to make a new file

    def write(self, text: str) -> None:
        """Best effort: a supervisor that cannot even say why it failed leaves the run `lost`."""
        line = (" ".join(text.split())[:MAX_LINE] + "\n").encode()
        try:
            fd = os.open(self.room_path, os.O_WRONLY)
        except OSError:
            fd = None
        try:
            if fd is None:
                with open(self.path, "wb") as f:
                    f.write(line)
                return
            os.write(fd, line)  # within the bytes the file has: the filesystem needs no new block for it
            os.ftruncate(fd, len(line))
            os.replace(self.room_path, self.path)
        except OSError:
            pass
        finally:
            if fd is not None:
                os.close(fd)

    def discard(self) -> None:
        try:
            os.unlink(self.room_path)
        except OSError:
            pass


def read(run_dir: str) -> str | None:
    """The failure a run's supervisor wrote, or None when it wrote none."""
    try:
        with open(os.path.join(run_dir, SUPERVISOR_ERR), "rb") as f:
            text = f.read(MAX_LINE + 1).decode(errors="replace").strip()
    except OSError:
        return None
    return text or None
