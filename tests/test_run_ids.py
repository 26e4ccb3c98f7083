"""Run ids: two runs started in the same second that draw the same suffix never share a record."""
from __future__ import annotations

from offload.runs import record
from offload.runs.record import RUNS_DIR, claim_run_id


def test_a_run_id_already_taken_is_drawn_again_and_its_record_left_alone(tmp_path, monkeypatch):
    drawn = iter(["20261205-172004-0c98", "20261205-172004-0c98", "20261205-172004-1f2e"])
    monkeypatch.setattr(record, "new_run_id", lambda: next(drawn))  # the draw itself: the one thing stood in for
    first = claim_run_id(tmp_path)
    (tmp_path / RUNS_DIR / first / "meta.json").write_text("{}")
    second = claim_run_id(tmp_path)
    assert (first, second) == ("20261205-172004-0c98", "20261205-172004-1f2e")
    assert (tmp_path / RUNS_DIR / first / "meta.json").read_text() == "{}"
    assert (tmp_path / RUNS_DIR / second).is_dir() and (tmp_path / ".offload" / ".gitignore").exists()
