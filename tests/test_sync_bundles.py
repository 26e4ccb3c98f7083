"""The laptop's side of bundles (offload/sync/bundles.py): a small file is read whole and as the scan saw it, or
left to be sent again the usual way; never sent as something it was not."""
from __future__ import annotations

import os

from offload.sync.bundles import BUNDLE_FILE_MAX, read_whole
from offload.sync.scan import LocalEntry


def scanned(path) -> LocalEntry:
    st = os.lstat(path)
    return LocalEntry(path.name, "file", st.st_size, st.st_mtime_ns, st.st_mode & 0o7777)


def test_a_small_file_is_read_whole_with_its_mtime(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"x" * 1000)
    data, mtime_ns = read_whole(path, scanned(path))
    assert data == b"x" * 1000 and mtime_ns == path.stat().st_mtime_ns


def test_a_file_gone_since_the_scan_is_not_sent(tmp_path):
    (tmp_path / "gone").write_bytes(b"z")
    entry = scanned(tmp_path / "gone")
    (tmp_path / "gone").unlink()
    assert read_whole(tmp_path / "gone", entry) is None


def test_a_file_grown_past_a_bundles_files_since_the_scan_goes_the_usual_way(tmp_path):
    path = tmp_path / "grew"
    path.write_bytes(b"y" * 100)
    entry = scanned(path)
    path.write_bytes(b"y" * (BUNDLE_FILE_MAX + 1))
    assert read_whole(path, entry) == "changed"


def test_a_file_rewritten_since_the_scan_at_the_same_size_goes_the_usual_way(tmp_path):
    path = tmp_path / "same_size"
    path.write_bytes(b"old!")
    entry = scanned(path)
    path.write_bytes(b"new!")
    os.utime(path, ns=(entry.mtime_ns + 1, entry.mtime_ns + 1))  # a later mtime, as a coarse clock may not give
    assert read_whole(path, entry) == "changed"


def test_a_fifo_in_the_files_place_is_not_waited_on(tmp_path):
    path = tmp_path / "was_a_file"
    path.write_bytes(b"")
    entry = scanned(path)
    path.unlink()
    os.mkfifo(path)
    assert read_whole(path, entry) == "changed"
