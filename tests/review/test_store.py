"""The review store on real SQLite with a real governance audit log: rows, audit entries, export frames."""
from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from eval.review.recorder import Recorder
from eval.review.store import AlreadyRecorded, Decision, Rating, ReviewStore, Vote
from governance import GovernanceContext
from governance.database import StoreUnavailable
from governance.review_log import latest_decisions

IMAGE_A, IMAGE_B = "sha256:" + "aa" * 32, "sha256:" + "bb" * 32


@pytest.fixture
def gov(tmp_path) -> GovernanceContext:
    return GovernanceContext.init(tmp_path / "gov")


@pytest.fixture
def store(store_url) -> ReviewStore:
    """The judgment tests run on both backends: a SQLite file and a database on a real PostgreSQL server."""
    store = ReviewStore(store_url)
    for name, role in (("rita", "reviewer"), ("alan", "approver")):
        store.add_account(name, role, "not-a-real-hash")
    yield store
    store.close()


def rating(**values) -> Rating:
    base = dict(run_id="run1", line=1, image_sha256=IMAGE_A, system="sys-a", subject="alice", prompt="a photo",
                prompt_category="identity", seed=0, reviewer="rita", likeness=4, prompt_fidelity=5, quality=3,
                time_spent_s=2.5, presented_position=0)
    return Rating(**(base | values))


@pytest.fixture
def sqlite_store(tmp_path) -> ReviewStore:
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.sqlite'}")
    yield store
    store.close()


def test_sqlite_is_in_wal_mode_with_a_schema_version(sqlite_store, tmp_path):
    store = sqlite_store
    with sqlite3.connect(tmp_path / "review.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT store, version FROM schema_versions").fetchall() == [("review store", 1)]
    ReviewStore(store.url).close()  # reopening migrates nothing twice
    with sqlite3.connect(tmp_path / "review.sqlite") as connection:
        assert connection.execute("SELECT count(*) FROM schema_versions").fetchone()[0] == 1


def test_a_newer_schema_is_refused(sqlite_store, tmp_path):
    store = sqlite_store
    with sqlite3.connect(tmp_path / "review.sqlite") as connection:
        connection.execute("UPDATE schema_versions SET version = 99 WHERE store = 'review store'")
    with pytest.raises(StoreUnavailable, match="version 99 is newer"):
        ReviewStore(store.url)


def test_every_judgment_is_a_row_and_an_audit_entry(store, gov):
    recorder = Recorder(store, gov.audit_log)
    recorder.record(rating(), "reviewer")
    recorder.record(rating(line=2, image_sha256=IMAGE_B, skipped=True, likeness=None, prompt_fidelity=None,
                           quality=None, flag_other=True, other_text="<b>odd</b>"), "reviewer")
    recorder.record(Vote(run_id="run1", pair_id="1-2", subject="alice", prompt="a photo", seed=0,
                         system_left="sys-b", system_right="sys-a", line_left=2, line_right=1, image_left=IMAGE_B,
                         image_right=IMAGE_A, reviewer="rita", outcome="right", winner="sys-a", time_spent_s=1.0),
                    "reviewer")
    recorder.record(Decision(run_id="run1", line=1, image_sha256=IMAGE_A, system="sys-a", subject="alice",
                             approver="alan", decision="reject", reason="artefacts", time_spent_s=9.0), "approver")
    entries = gov.audit_log.entries()
    assert [e["action"] for e in entries] == ["review.rating"] * 2 + ["review.vote", "review.decision"]
    assert gov.verify_audit_log().ok
    decision = latest_decisions(entries)[IMAGE_A]
    assert (decision.decision, decision.reason, decision.run, decision.line, decision.actor) == (
        "reject", "artefacts", "run1", 1, "alan")
    assert store.unaudited() == []

    frames = store.export_frames()
    ratings, votes, decisions = frames["ratings"], frames["votes"], frames["decisions"]
    assert len(ratings) == 2 and len(votes) == 1 and len(decisions) == 1
    assert str(ratings["likeness"].dtype) == "Int64" and ratings["likeness"].isna().tolist() == [False, True]
    assert ratings["skipped"].tolist() == [False, True] and ratings["flag_other"].dtype == bool
    assert ratings["presented_position"].dtype == "int64" and ratings["time_spent_s"].dtype == float
    assert isinstance(ratings["created"].dtype, pd.DatetimeTZDtype) and str(ratings["created"].dt.tz) == "UTC"
    assert votes.loc[0, "winner"] == "sys-a" and votes.loc[0, "outcome"] == "right"
    assert decisions.loc[0, "audit_seq"] == entries[-1]["seq"]
    assert list(ratings["audit_seq"]) == [entries[0]["seq"], entries[1]["seq"]]
    empty = store.export_frames(run_id="other")
    assert all(frame.empty for frame in empty.values())
    assert list(empty["decisions"].columns) == list(decisions.columns)


def test_a_reviewer_never_rates_an_image_twice(store, gov):
    recorder = Recorder(store, gov.audit_log)
    recorder.record(rating(), "reviewer")
    with pytest.raises(AlreadyRecorded):
        recorder.record(rating(likeness=1), "reviewer")
    assert store.count("rating") == 1 and len(gov.audit_log.entries()) == 1


def test_a_row_left_without_its_audit_entry_is_reconciled_once(store, gov):
    recorder = Recorder(store, gov.audit_log)
    store.add(rating())  # committed, then the process "died" before the audit append
    already = store.add(rating(line=2, image_sha256=IMAGE_B))
    recorder._append(already, "reviewer")  # died after the append, before storing the seq
    assert len(store.unaudited()) == 2
    done = recorder.reconcile({"rita": "reviewer"})
    assert len(done) == 2 and any("already written" in line for line in done)
    assert store.unaudited() == [] and recorder.reconcile({}) == []
    entries = gov.audit_log.entries()
    assert len(entries) == 2 and entries[-1]["details"]["reconciled"] is True
    assert sorted(store.export_frames()["ratings"]["audit_seq"]) == [1, 2]
