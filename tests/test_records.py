"""The host's record of what a sync wrote (remote_agent/records.py), on real files: what it stores reads back
exactly, an unreadable record owns nothing, and the intents log of a sync killed mid-rename is adopted only
where the path is now exactly what that sync meant to write."""
from __future__ import annotations

import json
import os
from pathlib import Path

from remote_agent.records import PENDING_FILE, STATE_FILE, Records, identity


def make_tree(root: Path) -> Records:
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.bin").write_bytes(b"\0" * 1000)
    (root / "empty").mkdir()
    (root / "latest").symlink_to("data/train.bin")
    return Records({relpath: identity(str(root / relpath)) for relpath in ("data/train.bin", "empty", "latest")}, 7)


def test_records_read_back_exactly_and_an_unreadable_file_owns_nothing(tmp_path):
    records = make_tree(tmp_path)
    records.save(str(tmp_path))

    again = Records.read(str(tmp_path))
    assert again.paths == records.paths and again.generation == 7
    assert again.paths["latest"] == ["link", 0, again.paths["latest"][2], again.paths["latest"][3], "data/train.bin"]
    assert again.owns("data/train.bin", identity(str(tmp_path / "data" / "train.bin")))

    state = tmp_path / STATE_FILE
    data = json.loads(state.read_text())
    data["kinds"] = data["kinds"][:-1]  # cut: the lengths disagree
    state.write_text(json.dumps(data))
    broken = Records.read(str(tmp_path))
    assert broken.paths == {}
    assert not broken.owns("data/train.bin", identity(str(tmp_path / "data" / "train.bin")))  # kept, never replaced


def test_a_killed_syncs_intents_are_adopted_only_where_the_path_is_what_it_meant_to_write(tmp_path):
    records = make_tree(tmp_path)
    records.save(str(tmp_path))
    (tmp_path / "data" / "renamed.bin").write_bytes(b"new")  # the rename happened before the kill
    renamed = identity(str(tmp_path / "data" / "renamed.bin"))
    intended_elsewhere = ["file", 99, 1, 1, ""]  # a rename that never happened: the old file is still there
    with open(tmp_path / PENDING_FILE, "w") as f:
        f.write(json.dumps({"data/renamed.bin": renamed, "data/train.bin": intended_elsewhere}) + "\n")
        f.write('{"data/cut.bin": ["file", 1')  # the line the kill cut short: its renames never began

    adopted = Records.read(str(tmp_path))

    assert adopted.paths["data/renamed.bin"] == renamed
    assert adopted.paths["data/train.bin"] == records.paths["data/train.bin"]  # not the intent: the old record
    assert "data/cut.bin" not in adopted.paths
    adopted.save(str(tmp_path))
    assert not os.path.exists(tmp_path / PENDING_FILE)  # once the records are safe, the log goes
