"""Durable commits: a file's bytes reach the disk before the rename that gives it its final name, and the
renames reach the disk before the agent records or reports them.

Without this a power cut can leave a renamed file empty or holding old blocks (the rename was in the
filesystem's journal, the data was not), and synced.json naming a file whose bytes never arrived. The order
is always: sync the file while it is open, rename it, sync its directory.

One fsync per small file costs one wait on the disk each, and a sync of 10,000 small files would pay 10,000
of them. So a sync gathers its written files in a Batch: one flush makes a few hundred durable together,
with one syncfs of their filesystem (one journal commit for all) where the batch is big and the kernel
reports syncfs errors, else with parallel fsyncs; then it renames them. The flush runs beside the receiving
of the next batch, so a slow disk costs a sync little more than the wait for its last batch. The directories are synced once, at
the end of the sync. A big file hands its bytes to the disk every WRITEBACK_BYTES while it arrives, so the
disk works while the network does and the final fsync has little left to wait for.
"""
from __future__ import annotations

import errno
import json
import os

WRITEBACK_BYTES = 64 << 20  # a big file starts this much of its writeback at a time while it is received
BATCH_FILES = 256  # files waiting for one flush where each needs its own fsync: open fds far below ulimit -n
BATCH_FILES_SYNCFS = 2048  # where one syncfs covers them (few open fds): each syncfs also waits for what other
#                            processes wrote to the disk, so the fewer the better; a kill -9 re-sends at most this
BATCH_BYTES = 64 << 20  # and a dropped link leaves at most this much received but not yet committed
FLUSH_FROM = 1024  # files waiting at which a flush starts, once the disk is done with the one before
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
        import ctypes  # noqa: PLC0415 (start-up time: most requests never sync anything)
        try:
            call = getattr(ctypes.CDLL(None, use_errno=True), name)
        except (OSError, AttributeError):  # not Linux: fsync alone still makes bytes durable
            call = None
        if call is not None:
            int64, uint = ctypes.c_longlong, ctypes.c_uint
            call.argtypes = {"sync_file_range": [ctypes.c_int, int64, int64, uint],
                             "renameat2": [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, uint],
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
        import ctypes  # noqa: PLC0415 (loaded already, by libc_call)
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
                import ctypes  # noqa: PLC0415 (loaded already, by libc_call)
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error))
        return
    if len(fds) == 1:
        os.fsync(fds[0])
        return
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 (start-up time, as libc_call)
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


def log_intents(path: str, intents: list) -> list:
    """Append one JSON line of intents to path; returns the fds to sync with the batch (the log's, and its
    directory's when the log is new: its name must survive too)."""
    created = not os.path.lexists(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    fds = [fd]
    try:
        os.write(fd, json.dumps(dict(intents), separators=(",", ":")).encode() + b"\n")
        if created:
            fds.append(os.open(os.path.dirname(path) or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)))
    except BaseException:
        for opened in fds:
            os.close(opened)
        raise
    return fds


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


class Syncing:
    """One batch's syncs, on a thread of their own: the disk makes one batch durable while the next arrives.
    Only syscalls run there (they release the GIL); every rename and record stays on the agent's thread."""

    def __init__(self, fds: list, intents: list, intent_log: str | None):
        import threading  # noqa: PLC0415 (start-up time, as libc_call)
        self.fds, self.intents, self.intent_log = fds, intents, intent_log
        self.error = None
        self.done = threading.Event()
        threading.Thread(target=self.run, name="batch-sync", daemon=True).start()

    def run(self) -> None:
        extra = []
        try:
            if self.intents and self.intent_log is not None:
                extra = log_intents(self.intent_log, self.intents)
            sync_all(self.fds + extra)  # one round of syncs for all
        except BaseException as exc:  # the disk did not take them (or the intents): none may be renamed
            self.error = exc
        finally:
            for fd in extra:
                os.close(fd)
            self.done.set()


class Batch:
    """Received files held back from their rename until one flush has made them all durable.

    add() takes a file whose bytes are all written, its descriptor still open, with rename() to move it to its
    final name and discard() to remove it (the caller knows what "ours" means). Past SYNCFS_FROM files the
    batch closes each new one at once: the syncfs through the earlier ones covers it. flush() hands the pending
    files to a background sync (Syncing) and returns; the batch before it is committed first: its sync waited
    for, its files closed and renamed. A flush starts as soon as the disk is done with the last one and
    FLUSH_FROM files wait, or when the batch is full; settle() commits everything; finish() settles, then syncs
    every directory a rename or a mkdir touched. The first failure is kept in `failure`, not raised: a sync
    reports it and keeps its stream in step, and the other files of the batch still commit."""

    def __init__(self):
        self.pending = []  # (fd, or None for a symlink or a file the batch's syncfs covers; final path, ...)
        self.finals = set()
        self.bytes = 0
        self.devices = set()  # of the files whose fds stay open: one syncfs through them covers each device
        self.open_fds = 0
        self.touched = set()  # directories whose entries changed: synced once, by finish()
        self.failure = None
        self.syncfs = libc_call("syncfs") is not None
        self.intents = []  # (relpath, what the rename makes of it): one JSON line a flush in intent_log
        self.intent_log = None  # the file those lines go to, made durable with the batch, before its renames
        self.in_flight = None  # (Syncing, its pending files, their final paths): handed off, not yet renamed

    def add(self, fd: int | None, final: str, size: int, rename, discard, intent=None, device=None) -> None:
        """device: the file's st_dev, where the caller has it (one fstat less a file)."""
        if fd is not None and device is None:
            device = os.fstat(fd).st_dev
        if fd is not None and self.syncfs and self.open_fds >= SYNCFS_FROM and device in self.devices:
            os.close(fd)  # synced by the syncfs of an fd opened before it was written
            fd = None
        if fd is not None:
            self.devices.add(device)
            self.open_fds += 1
        self.pending.append((fd, final, rename, discard))
        if intent is not None:
            self.intents.append(intent)
        self.finals.add(final)
        self.bytes += size
        full = len(self.pending) >= (BATCH_FILES_SYNCFS if self.syncfs else BATCH_FILES) or self.bytes >= BATCH_BYTES
        disk_idle = self.in_flight is None or self.in_flight[0].done.is_set()
        if full or (disk_idle and len(self.pending) >= FLUSH_FROM):
            self.flush()

    def holds(self, final: str) -> bool:
        """Whether final is waiting for its rename (pending or in flight)."""
        return final in self.finals or (self.in_flight is not None and final in self.in_flight[2])

    def flush(self) -> None:
        self.commit_in_flight()
        if not self.pending:
            return
        pending, self.pending, finals, self.finals, self.bytes = self.pending, [], self.finals, set(), 0
        intents, self.intents = self.intents, []
        self.devices, self.open_fds = set(), 0
        self.in_flight = (Syncing([fd for fd, _, _, _ in pending if fd is not None], intents, self.intent_log),
                          pending, finals)

    def commit_in_flight(self) -> None:
        """Wait for the batch in flight to be durable, then close and rename its files (or, if it is not, discard them)."""
        if self.in_flight is None:
            return
        syncing, pending, _ = self.in_flight
        syncing.done.wait()
        self.in_flight = None
        if syncing.error is not None:
            self.failed(syncing.error)
        for fd, final, rename, discard in pending:
            try:
                if fd is not None:
                    os.close(fd)
                if syncing.error is None:
                    rename()
                    self.touched.add(final.rpartition("/")[0] or ".")
                else:
                    discard()
            except Exception as exc:  # one file's failure is reported; the others still commit
                self.failed(exc)

    def settle(self) -> None:
        """Every file added so far durable and renamed (or discarded)."""
        self.flush()
        self.commit_in_flight()

    def finish(self) -> None:
        self.settle()
        touched, self.touched = self.touched, set()
        try:
            sync_dirs(sorted(touched))
        except OSError as exc:
            self.failed(exc)

    def failed(self, exc: Exception) -> None:
        self.failure = self.failure or exc
