"""The review export folder: what `python -m eval.review export` writes and the report reads back."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from eval.review.export import (COLUMNS, SUMMARY_FILE, ReviewsError, empty_frames, export_run, read_export,
                                write_export)
from eval.review.stats import review_statistics, run_statistics


def test_an_export_round_trips_with_its_summary(tmp_path, demo_run, demo_frames):
    statistics = run_statistics(demo_frames, demo_run.scores, demo_run.summary, n_resamples=10)  # alpha itself
    assert export_run(demo_frames, demo_run.scores, demo_run.summary, tmp_path) == tmp_path
    frames = read_export(tmp_path)
    for name, frame in demo_frames.items():
        pd.testing.assert_frame_equal(frames[name], frame.reset_index(drop=True))
    assert str(frames["ratings"]["likeness"].dtype) == "Int64"
    assert str(frames["ratings"]["created"].dtype).startswith("datetime64") and frames["ratings"]["created"].dt.tz
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["n_ratings"] == len(demo_frames["ratings"]) and summary["decisions"] == {"approve": 4, "reject": 1}
    assert summary["agreement"]["likeness"]["alpha"] == pytest.approx(statistics.agreement["likeness"].alpha, abs=1e-6)
    assert summary["human_vs_machine"]["sface"]["auc"] == 1.0
    assert [r["system"] for r in summary["ranking"]] == ["ideal", "copy-paste", "impostor"]


def test_an_empty_export_is_readable_and_has_no_reviews(tmp_path, demo_run):
    write_export(empty_frames(), tmp_path)
    statistics = review_statistics(read_export(tmp_path), demo_run.scores, n_resamples=10)
    assert (statistics.n_ratings, statistics.n_votes, statistics.n_decisions) == (0, 0, 0)
    assert statistics.ranking is None and statistics.agreement["likeness"].alpha is None


def test_a_missing_file_is_named(tmp_path, demo_frames):
    write_export(demo_frames, tmp_path)
    (tmp_path / "votes.parquet").unlink()
    with pytest.raises(ReviewsError, match="votes.parquet: missing from the review export"):
        read_export(tmp_path)
    with pytest.raises(ReviewsError, match="no such review export folder"):
        read_export(tmp_path / "nowhere")


def test_a_file_that_is_not_parquet_is_named(tmp_path, demo_frames):
    write_export(demo_frames, tmp_path)
    (tmp_path / "ratings.parquet").write_text("line,likeness\n1,5\n")
    with pytest.raises(ReviewsError, match=r"ratings.parquet: not a readable parquet file"):
        read_export(tmp_path)


def test_missing_columns_and_unknown_outcomes_are_refused_with_the_row(tmp_path, demo_frames):
    write_export(demo_frames, tmp_path)
    demo_frames["decisions"].drop(columns=["approver"]).to_parquet(tmp_path / "decisions.parquet")
    with pytest.raises(ReviewsError, match="decisions.parquet: .*missing column.*approver"):
        read_export(tmp_path)
    votes = demo_frames["votes"].copy()
    votes.loc[3, "outcome"] = "draw"
    with pytest.raises(ReviewsError, match=r"votes frame: row 3: outcome 'draw' is not one of both_bad, left, right, tie"):
        write_export({**demo_frames, "votes": votes}, tmp_path / "again")
    assert not (tmp_path / "again" / "votes.parquet").exists()


def test_every_exported_frame_has_the_stores_columns():
    assert set(COLUMNS) == {"ratings", "votes", "decisions"}
    assert {"reviewer", "time_spent_s", "presented_position", "created"} <= set(COLUMNS["ratings"])
    assert {"audit_seq", "approver", "reason"} <= set(COLUMNS["decisions"])
