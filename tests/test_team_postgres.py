"""A team on one PostgreSQL database: 8 real processes record consent, append audit entries and submit
ratings (each with its audit entry, as the review app does) at once, through the same
governance.toml. Nothing is lost or written twice, the chain verifies with no gap in its sequence,
also when the server is restarted in the middle of the run."""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from eval.review.recorder import Recorder
from eval.review.store import Rating, ReviewStore
from governance import Actor, GovernanceContext, Purpose, new_record
from governance.audit_sql import AuditStoreError
from governance.database import StoreUnavailable
from governance.review_log import RATING

WORKERS = 8
IMAGE = "sha256:" + "ab" * 32


def team_workspace(tmp_path: Path, url: str) -> Path:
    """A workspace whose registry, audit log and review store are all the one database at ``url``."""
    GovernanceContext.init(tmp_path / "gov", controller="Team Avatars Ltd")
    config = tmp_path / "gov" / "governance.toml"
    text = config.read_text().replace('registry = "consent.sqlite"', f'registry = "{url}"')
    text = text.replace('audit_log = "audit/audit.jsonl"', f'audit_log = "{url}"')
    config.write_text(text + f'review_store = "{url}"\n')
    store = ReviewStore(url)
    for worker in range(WORKERS):
        store.add_account(f"w{worker}", "reviewer", "not-a-real-hash")
    store.close()
    GovernanceContext.load(config).audit_log.checkpoint()
    return config


def _rating(worker: int, index: int) -> Rating:
    return Rating(run_id="team", line=index, image_sha256=IMAGE, system="cand", subject=f"p{worker}-{index}",
                  prompt="a photo", prompt_category="identity", seed=2**40 + index, reviewer=f"w{worker}",
                  likeness=1 + index % 5, prompt_fidelity=3, quality=4, time_spent_s=1.0, presented_position=0)


def _member(config: str, worker: int, count: int, out: str) -> None:
    """One team member: per item a consent record, an audit entry and a rating. Each write that fails
    is noted (its outcome unknown) and the member goes on; none is retried, so none can be doubled."""
    gov = GovernanceContext.load(config)
    recorder = Recorder(ReviewStore(gov.config.review_store), gov.audit_log)
    actor = Actor(f"w{worker}", "operator")
    done: dict[str, list] = {"consent": [], "append": [], "rating": []}
    failed: dict[str, list] = {"consent": [], "append": [], "rating": []}
    errors = []
    Path(out).with_suffix(".ready").touch()
    for index in range(count):
        writes = {
            "consent": lambda: gov.record_consent(new_record(f"p{worker}-{index}", [Purpose.EVALUATION],
                                                             controller="C", jurisdiction="EU", actor=actor.name),
                                                  actor=actor),
            "append": lambda: gov.audit_log.append(actor=actor.name, action="team.append", object=f"{worker}:{index}"),
            "rating": lambda: recorder.record(_rating(worker, index), "reviewer"),
        }
        for kind, write in writes.items():
            try:
                write()
                done[kind].append(index)
            except (StoreUnavailable, AuditStoreError, DBAPIError) as error:
                failed[kind].append(index)
                errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    Path(out).write_text(json.dumps({"done": done, "failed": failed, "errors": errors}))


def run_team(config: Path, tmp_path: Path, count: int, during=None) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"member-{worker}.json" for worker in range(WORKERS)]
    members = [context.Process(target=_member, args=(str(config), worker, count, str(out)))
               for worker, out in enumerate(outs)]
    for member in members:
        member.start()
    if during is not None:
        during()
    for member in members:
        member.join(300)
    assert [member.exitcode for member in members] == [0] * WORKERS
    return [json.loads(out.read_text()) for out in outs]


def check_team_state(config: Path, results: list[dict], count: int) -> None:
    """What every member confirmed is there exactly once; what failed is there at most once; the log
    verifies, has no gap, and every rating row points at its own audit entry."""
    gov = GovernanceContext.load(config)
    store = ReviewStore(gov.config.review_store)
    Recorder(store, gov.audit_log).reconcile({f"w{worker}": "reviewer" for worker in range(WORKERS)})
    entries = gov.audit_log.entries()
    assert [entry["seq"] for entry in entries] == list(range(1, len(entries) + 1))
    by_seq = {entry["seq"]: entry for entry in entries}
    appended = [entry["object"] for entry in entries if entry["action"] == "team.append"]
    consent_logged = [entry["subject"] for entry in entries if entry["action"] == "consent.record"]
    ratings = store.export_frames(run_id="team")["ratings"]
    assert len(appended) == len(set(appended)) and len(consent_logged) == len(set(consent_logged))
    assert len(ratings) == len(set(zip(ratings["reviewer"], ratings["line"])))
    rating_entries = [entry for entry in entries if entry["action"] == RATING]
    assert sorted(ratings["audit_seq"]) == sorted(entry["seq"] for entry in rating_entries)
    for row in ratings.itertuples():
        entry = by_seq[row.audit_seq]
        assert (entry["action"], entry["details"]["review_id"], entry["subject"]) == (
            RATING, row.rating_id, f"p{row.reviewer[1:]}-{row.line}")
    rated = {(row.reviewer, row.line) for row in ratings.itertuples()}
    for worker, result in enumerate(results):
        done, failed = result["done"], result["failed"]
        assert set(done["append"]) <= {int(o.split(":")[1]) for o in appended if o.startswith(f"{worker}:")} \
            <= set(done["append"]) | set(failed["append"])
        have_consent = {index for index in range(count) if gov.registry.records_for(f"p{worker}-{index}")}
        assert set(done["consent"]) <= have_consent <= set(done["consent"]) | set(failed["consent"])
        assert all(len(gov.registry.records_for(f"p{worker}-{index}")) == 1 for index in have_consent)
        assert have_consent <= {int(s.split("-")[1]) for s in consent_logged if s.startswith(f"p{worker}-")}
        have_rating = {line for reviewer, line in rated if reviewer == f"w{worker}"}
        assert set(done["rating"]) <= have_rating <= set(done["rating"]) | set(failed["rating"])
    gov.audit_log.checkpoint()
    assert gov.audit_log.verify().ok
    store.close()


def test_eight_members_share_one_database_and_lose_nothing(tmp_path, postgres_url):
    config = team_workspace(tmp_path, postgres_url)
    results = run_team(config, tmp_path, count=12)
    assert all(not result["failed"][kind] for result in results for kind in result["failed"])
    check_team_state(config, results, 12)
    entries = GovernanceContext.load(config).audit_log.entries()
    assert len(entries) == WORKERS * 12 * 3  # every consent, append and rating logged once


@pytest.mark.slow
def test_a_server_restart_mid_run_leaves_nothing_half_written(tmp_path, postgres_cluster, postgres_url):
    config = team_workspace(tmp_path, postgres_url)
    gov = GovernanceContext.load(config)
    at_restart = []

    def restart_once_writing() -> None:  # when every member is connected and writing
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (len(list(tmp_path.glob("*.ready"))) < WORKERS
                                               or len(gov.audit_log.entries()) < 60):
            time.sleep(0.2)
        at_restart.append(len(gov.audit_log.entries()))
        postgres_cluster.restart()

    results = run_team(config, tmp_path, count=25, during=restart_once_writing)
    errors = [error for result in results for error in result["errors"]]
    assert all("\n" not in error and postgres_cluster.password not in error for error in errors)
    check_team_state(config, results, 25)
    assert 60 <= at_restart[0] < len(gov.audit_log.entries()) - WORKERS  # the restart came mid-run
    print(f"restart after {at_restart[0]} entries; {len(errors)} writes reported failed: {sorted(set(errors))[:3]}")
    done = sum(len(result["done"][kind]) for result in results for kind in result["done"])
    assert done >= WORKERS * 25 * 3 - len(errors)  # every write either confirmed or reported
