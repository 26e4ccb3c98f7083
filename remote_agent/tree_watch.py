"""Whether anything changed in a project's directories since a manifest was built: inotify, read without waiting.

The kernel queues an inotify event as part of the call that changes a file, so a read of the queue sees every
change completed before it; no thread is needed. A watch is set on each directory holding synced paths before
the manifest is built from the disk, so a change during the build shows too. Anything at all (a queue
overflow, a directory created, a watch the kernel refused, an event we cannot place) counts as a change: the
manifest is then built again. Never used where inotify does not see every change: a network filesystem
(another machine's writes raise no event here), or a kernel without inotify. Writes through a shared mapping
raise no event either; the apply still checks each file against its record before replacing it (files.py),
so what is missed is only the `kept` line of a sync that sends nothing.
"""
from __future__ import annotations

import os
import struct

from .durable import libc_call

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW = 0x400, 0x800, 0x4000
IN_ONLYDIR, IN_DONT_FOLLOW = 0x01000000, 0x02000000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
CHANGES = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
           | IN_DELETE_SELF | IN_MOVE_SELF)
EVENT_HEADER = struct.calcsize("iIII")  # struct inotify_event: int wd; uint32 mask, cookie, len; then len bytes of name
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "f2fs", "bcachefs",
                               "jfs", "reiserfs", "overlay"})
OWN_DIR = b".offload"  # the agent's records and locks: its own writes there are not changes to the tree
MAX_DIRS = 20_000  # more directories than this: the manifest is simply built each time


class TreeWatch:
    def __init__(self, fd: int, root: str, add_watch):
        self.fd, self.root, self.root_wd, self._add_watch = fd, root, -1, add_watch
        self.changed = False
        self.directories = 0

    @classmethod
    def open(cls, root: str) -> "TreeWatch | None":
        """A watch with no directory yet, for directories under root added one by one (add), each before it is
        read; None where one cannot see every change."""
        if filesystem_of(root) not in LOCAL_FILESYSTEMS:
            return None
        init, add = libc_call("inotify_init1"), libc_call("inotify_add_watch")
        if init is None or add is None:
            return None
        fd = init(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:  # EMFILE: the user's inotify instances are taken (an IDE, other agents)
            return None
        return cls(fd, root, add)

    @classmethod
    def start(cls, root: str, directories) -> "TreeWatch | None":
        """A watch on root and each of directories (absolute), or None where one cannot see every change."""
        directories = {root, *directories}
        watch = cls.open(root) if len(directories) <= MAX_DIRS else None
        if watch is None or not all(watch.add(directory) for directory in directories):
            return None
        return watch

    def add(self, directory: str) -> bool:
        """Watch directory too. False, and the watch closed (it would miss changes), where the kernel refuses
        (ENOSPC: max_user_watches; the directory gone already) or past MAX_DIRS."""
        if self.fd < 0:
            return False
        wd = self._add_watch(self.fd, os.fsencode(directory), CHANGES | IN_ONLYDIR | IN_DONT_FOLLOW)
        self.directories += 1
        if wd < 0 or self.directories > MAX_DIRS:
            self.close()
            return False
        if directory == self.root:
            self.root_wd = wd
        return True

    def quiet(self) -> bool:
        """Whether no change happened since start; once one has, always False."""
        while not self.changed:
            try:
                data = os.read(self.fd, 64 << 10)
            except BlockingIOError:
                return True
            except OSError:
                self.changed = True
                break
            self.changed = any(self.is_change(wd, mask, name) for wd, mask, name in events(data))
        return False

    def is_change(self, wd: int, mask: int, name: bytes) -> bool:
        if mask & IN_Q_OVERFLOW or wd < 0:
            return True
        return not (wd == self.root_wd and name == OWN_DIR)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.changed = True


def events(data: bytes):
    """(wd, mask, name) of each inotify_event in data."""
    offset = 0
    while offset + EVENT_HEADER <= len(data):
        wd, mask, _, length = struct.unpack_from("iIII", data, offset)
        name = data[offset + EVENT_HEADER:offset + EVENT_HEADER + length].rstrip(b"\0")
        yield wd, mask, name
        offset += EVENT_HEADER + length


def filesystem_of(path: str) -> str:
    """The type of the filesystem holding path, from /proc/self/mounts (the longest mount point above it)."""
    try:
        with open("/proc/self/mounts") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return ""
    path, best, kind = os.path.realpath(path), "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind
