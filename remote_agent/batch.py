"""A sync's received files, made durable a batch at a time before their renames (durable.py says why).

One fsync per small file costs one wait on the disk each, and a sync of 10,000 small files would pay 10,000
of them. So a sync gathers its written files in a Batch: one flush makes a few hundred durable together,
with one syncfs of their filesystem (one journal commit for all) where the batch is big and the kernel
reports syncfs errors, else with parallel fsyncs; then it renames them. The flush runs beside the receiving
of the next batch, so a slow disk costs a sync little more than the wait for its last batch. The directories
are synced once, at the end of the sync.
"""
from __future__ import annotations

import json
import os

from .durable import SYNCFS_FROM, libc_call, sync_all, sync_dirs

BATCH_FILES = 256  # files waiting for one flush where each needs its own fsync: open fds far below ulimit -n
BATCH_FILES_SYNCFS = 2048  # where one syncfs covers them (few open fds): each syncfs also waits for what other
#                            processes wrote to the disk, so the fewer the better; a kill -9 re-sends at most this
BATCH_BYTES = 64 << 20  # and a dropped link leaves at most this much received but not yet committed
FLUSH_FROM = 1024  # files waiting at which a flush starts, once the disk is done with the one before


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


class Syncing:
    """One batch's syncs, on a thread of their own: the disk makes one batch durable while the next arrives.
    Only syscalls run there (they release the GIL); every rename and record stays on the agent's thread."""

    def __init__(self, fds: list, intents: list, intent_log: str | None):
        import threading  # lazy: start-up time, as durable.libc_call
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
