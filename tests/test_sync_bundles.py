"""The laptop's side of bundles (offload/sync/bundles.py): a small file is read whole and unchanged, or left to
be sent again the usual way; never sent as something it was not."""
from __future__ import annotations

from offload.sync.bundles import BUNDLE_FILE_MAX, read_whole


def test_a_small_file_is_read_whole_with_its_mtime(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"x" * 1000)
    data, mtime_ns = read_whole(path)
    assert data == b"x" * 1000 and mtime_ns == path.stat().st_mtime_ns


def test_a_file_gone_since_the_scan_is_not_sent(tmp_path):
    assert read_whole(tmp_path / "gone") is None


def test_a_file_grown_past_a_bundles_files_since_the_scan_goes_the_usual_way(tmp_path):
    path = tmp_path / "grew"
    path.write_bytes(b"y" * (BUNDLE_FILE_MAX + 1))
    assert read_whole(path) == "changed"
