"""The review store on either backend: where it lives (governance.toml's review_store), 64-bit values,
plain postgresql:// URLs, and a server that cannot be reached (one line naming the store)."""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from eval.review.__main__ import main
from eval.review.store import Decision, ReviewStore
from governance import GovernanceContext
from governance.database import StoreUnavailable

from tests.review.test_store import IMAGE_A, rating


def test_seeds_and_audit_seqs_are_64_bit(store_url):
    store = ReviewStore(store_url)
    store.add_account("rita", "reviewer", "not-a-real-hash")
    seed = 2**62 + 12345  # the sampler's seeds are 64-bit
    row = store.add(rating(seed=seed))
    store.mark_audited(row, 2**40)
    frame = store.export_frames()["ratings"]
    assert frame.loc[0, "seed"] == seed and frame.loc[0, "audit_seq"] == 2**40
    store.close()


def test_timestamps_come_back_as_the_utc_moment_they_were_made(store_url):
    store = ReviewStore(store_url)
    store.add_account("alan", "approver", "not-a-real-hash")
    before = dt.datetime.now(dt.timezone.utc)
    store.add(Decision(run_id="r", line=1, image_sha256=IMAGE_A, system="s", subject="alice", approver="alan",
                       decision="approve", time_spent_s=1.0))
    created = store.export_frames()["decisions"].loc[0, "created"]
    assert str(created.tz) == "UTC" and abs((created - before).total_seconds()) < 60
    store.close()


def test_a_plain_postgresql_url_uses_psycopg_3(postgres_url):
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    store = ReviewStore(plain)
    assert store.engine.dialect.driver == "psycopg"
    store.add_account("rita", "reviewer", "not-a-real-hash")
    assert ReviewStore(postgres_url).account("rita").role == "reviewer"
    store.close()


def _workspace_with_review_store(tmp_path, location: str):
    GovernanceContext.init(tmp_path / "gov")
    config = tmp_path / "gov" / "governance.toml"
    config.write_text(config.read_text() + f'review_store = "{location}"\n')
    return config


def test_the_workspace_review_store_is_the_cli_default(tmp_path, store_url, capsys):
    location = store_url if "://" in store_url else "shared/review.sqlite"  # a relative path: beside the toml
    config = _workspace_with_review_store(tmp_path, location)
    assert main(["user", "add", "rita", "--role", "reviewer", "--workspace", str(config)]) == 0
    where = store_url if "://" in store_url else config.parent / "shared" / "review.sqlite"
    assert [account.name for account in ReviewStore(where).accounts()] == ["rita"]
    assert not (config.parent / "review.sqlite").exists()
    elsewhere = tmp_path / "other.sqlite"  # --database still wins
    assert main(["user", "add", "rosa", "--role", "reviewer", "--workspace", str(config),
                 "--database", str(elsewhere)]) == 0
    assert [account.name for account in ReviewStore(elsewhere).accounts()] == ["rosa"]


def test_an_unreachable_review_store_is_one_line_from_the_cli(tmp_path, postgres_cluster, capsys):
    wrong = postgres_cluster.url().replace(postgres_cluster.password, "not-the-password")
    config = _workspace_with_review_store(tmp_path, wrong)
    assert main(["user", "list", "--workspace", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: review store at ") and "password authentication failed" in error
    assert error.count("\n") == 1 and "not-the-password" not in error
    assert main(["user", "list", "--database", "postgresql://u:secret@127.0.0.1:9/none",
                 "--workspace", str(config)]) == 2
    error = capsys.readouterr().err
    assert "review store at" in error and "secret" not in error and error.count("\n") == 1


def test_a_write_cut_off_by_the_server_is_one_line_naming_the_store(postgres_url):
    store = ReviewStore(postgres_url)
    store.add_account("rita", "reviewer", "not-a-real-hash")
    admin = sa.create_engine(postgres_url)
    with pytest.raises(StoreUnavailable) as caught:
        with store.session() as session:
            pid = session.scalar(sa.select(sa.func.pg_backend_pid()))
            with admin.begin() as db:  # the server ends this session mid-transaction
                db.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            session.add(rating())
    message = str(caught.value)
    assert message.startswith("review store at ") and "\n" not in message
    assert store.count("rating") == 0 and store.account("rita")  # nothing half-written; the next call reconnects
    admin.dispose()
    store.close()
