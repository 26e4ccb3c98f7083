"""Durable commits: a file's bytes reach the disk before the rename that gives it its final name, and the
renames reach the disk before the agent records or reports them.

Without this a power cut can leave a renamed file empty or holding old blocks (the rename was in the
filesystem's journal, the data was not), and synced.json naming a file whose bytes never arrived. The order
is always: sync the file while it is open, rename it, sync its directory. A sync's many files are made
durable together, a batch at a time (batch.py), through sync_all and sync_dirs here. A big file hands its
bytes to the disk every WRITEBACK_BYTES while it arrives, so the disk works while the network does and the
final fsync has little left to wait for.
"""
from __future__ import annotations

import errno
import json
import os

WRITEBACK_BYTES = 8 << 20  # a big file starts this much of its writeback at a time while it is received
SYNCFS_FROM = 16  # files at which one syncfs beats parallel fsyncs; below, a small sync never waits for
#                   other processes' dirty data (a checkpoint being written) on the same disk
FSYNC_THREADS = 16  # fsyncs in flight at once: the filesystem folds them into few journal commits
SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, do not wait for it
RENAME_NOREPLACE = 1  # <linux/fs.h>: renameat2 fails with EEXIST rather than replace what is at the new name
AT_FDCWD = -100  # <fcntl.h>: paths relative to the working directory (ours are absolute)

_calls = {}


def libc_call(name: str):
    """A libc function (None where there is none), looked up on first use: the agent's start stays quick."""
    if name not in _calls:
        import ctypes  # lazy: the agent's start-up time, and most requests never sync anything
        try:
            call = getattr(ctypes.CDLL(None, use_errno=True), name)
        except (OSError, AttributeError):  # not Linux: fsync alone still makes bytes durable
            call = None
        if call is not None:
            int64, uint = ctypes.c_longlong, ctypes.c_uint
            call.argtypes = {"sync_file_range": [ctypes.c_int, int64, int64, uint],
                             "renameat2": [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, uint],
                             "inotify_add_watch": [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32],
                             }.get(name, [ctypes.c_int])
            call.restype = ctypes.c_int
        if name == "syncfs" and not kernel_at_least(5, 8):
            call = None  # before Linux 5.8 syncfs returned 0 even when writeback failed: only fsync can tell
        _calls[name] = call
    return _calls[name]


def kernel_at_least(major: int, minor: int) -> bool:
    try:
        found = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    except (AttributeError, ValueError):
        return False
    return found >= (major, minor)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes now; never waits, and a kernel that cannot is fine:
    the fsync that follows is what makes them durable."""
    sync_file_range = libc_call("sync_file_range")
    if sync_file_range is not None:
        sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


class EarlyWriteback:
    """For a file being received through fd (unbuffered writes): every WRITEBACK_BYTES, what was just written
    is handed to the disk."""

    def __init__(self, fd: int):
        self.fd, self.written, self.started = fd, 0, 0

    def wrote(self, count: int) -> None:
        self.written += count
        if self.written - self.started >= WRITEBACK_BYTES:
            start_writeback(self.fd, self.started, self.written - self.started)
            self.started = self.written


def rename_new(source: str, destination: str) -> bool:
    """Rename source to destination only where nothing is at destination; False where something is. One
    atomic renameat2 where the kernel and filesystem have it, so nothing that appears meanwhile is replaced;
    elsewhere a check just before the rename."""
    renameat2 = libc_call("renameat2")
    if renameat2 is not None:
        if renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(destination), RENAME_NOREPLACE) == 0:
            return True
        import ctypes  # lazy: as libc_call (loaded already, by it)
        error = ctypes.get_errno()
        if error == errno.EEXIST:
            return False
        if error not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(error, os.strerror(error), source, None, destination)
        _calls["renameat2"] = None  # a filesystem without it (some network ones): the check below from now on
    if os.path.lexists(destination):
        return False
    os.replace(source, destination)
    return True


def fsync_dir(path: str) -> None:
    """Make the names in a directory durable: a rename into it, a file or directory created in it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str, final: str, fd: int | None = None) -> None:
    """Rename tmp over final durably: tmp's bytes first (through fd, still open, where the caller has one),
    then the rename, then the directory that holds both."""
    if fd is not None:
        os.fsync(fd)
    else:
        reopened = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(reopened)
        finally:
            os.close(reopened)
    os.replace(tmp, final)
    fsync_dir(os.path.dirname(final) or ".")


def write_durably(path: str, data: bytes) -> None:
    """Replace the file at path with data; after a crash there is the old file or the new one, whole."""
    tmp = f"{path}.{os.getpid()}.tmp"  # per process: two agents writing the same file never share one
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            commit(tmp, path, f.fileno())
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_durably(path: str, data) -> None:
    write_durably(path, json.dumps(data).encode())


_pool = None


def sync_all(fds: list) -> None:
    """Make the bytes of every open file durable: one syncfs per filesystem for many, else an fsync each,
    several in flight at once. Raises the first failure."""
    global _pool
    syncfs = libc_call("syncfs") if len(fds) >= SYNCFS_FROM else None
    if syncfs is not None:
        for fd in {os.fstat(fd).st_dev: fd for fd in fds}.values():  # a mount inside the project: its own
            if syncfs(fd) != 0:
                import ctypes  # lazy: as libc_call (loaded already, by it)
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error))
        return
    if len(fds) == 1:
        os.fsync(fds[0])
        return
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor  # lazy: start-up time, as libc_call
        _pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="fsync")
    futures = [_pool.submit(os.fsync, fd) for fd in fds]
    failures = [future.exception() for future in futures]  # every one waited for: the caller closes the fds next
    first = next((failure for failure in failures if failure is not None), None)
    if first is not None:
        raise first


def sync_dirs(paths) -> None:
    """Make the entries of these directories durable (those gone since are skipped)."""
    fds = []
    try:
        for path in paths:
            try:
                fds.append(os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)))
            except FileNotFoundError:
                continue  # removed since: a directory the same sync emptied
        sync_all(fds)
    finally:
        for fd in fds:
            os.close(fd)


def make_dirs(path: str, touched: set) -> list:
    """os.makedirs, adding each directory whose entries it changed to touched (to sync at the end); returns
    the directories it created."""
    created, missing = [], path
    while missing and not os.path.isdir(missing):
        created.append(missing)
        missing = os.path.dirname(missing)
    os.makedirs(path, exist_ok=True)
    touched.update(os.path.dirname(made) for made in created)
    return created
