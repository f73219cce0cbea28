"""The consent registry on its two backends: the SQLite file it always was, and a real PostgreSQL server."""
import datetime as dt
import multiprocessing
import sqlite3

import pytest

from governance.consent import ConsentEvent, EventType, Purpose, new_record
from governance.database import StoreUnavailable
from governance.registry import ConcurrentChange, ConsentRegistry

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, tzinfo=UTC)

_LEGACY_SCHEMA = """
CREATE TABLE records (record_id TEXT PRIMARY KEY, subject TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX records_by_subject ON records(subject);
CREATE TABLE events (record_id TEXT NOT NULL REFERENCES records(record_id), position INTEGER NOT NULL,
                     body TEXT NOT NULL, PRIMARY KEY (record_id, position));
"""


def test_a_registry_file_written_before_the_sql_layer_still_opens(tmp_path):
    record = new_record("alice", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="olga", given_at=T0)
    path = tmp_path / "consent.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(_LEGACY_SCHEMA)
        db.execute("INSERT INTO records VALUES (?, ?, ?)",
                   (record.record_id, "alice", record.model_dump_json(exclude={"events"})))
        db.execute("INSERT INTO events VALUES (?, 0, ?)", (record.record_id, record.events[0].model_dump_json()))
    registry = ConsentRegistry(path)
    assert registry.check("alice", "evaluation", T0 + dt.timedelta(hours=1)).record_id == record.record_id
    assert path.read_bytes().startswith(b"SQLite format 3")


def test_records_come_back_oldest_consent_first(store_url):
    registry = ConsentRegistry(store_url)
    later = registry.add(new_record("bob", [Purpose.TRAINING], controller="C", jurisdiction="EU", actor="o",
                                    given_at=T0 + dt.timedelta(days=2)))
    first = registry.add(new_record("bob", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="o",
                                    given_at=T0))
    assert [r.record_id for r in registry.records_for("bob")] == [first.record_id, later.record_id]


def test_two_writers_appending_to_one_record_collide_instead_of_interleaving(store_url, monkeypatch):
    registry = ConsentRegistry(store_url)
    record = registry.add(new_record("carl", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="o",
                                     given_at=T0))
    registry.withdraw("carl", actor="o", at=T0 + dt.timedelta(days=1))
    # A second writer read the record before the withdrawal landed: the (record, position) key stops it.
    monkeypatch.setattr(registry, "get", lambda record_id: record)
    with pytest.raises(ConcurrentChange, match="changed while"):
        registry.add_event(record.record_id, ConsentEvent(event_type=EventType.EXPIRED,
                                                          event_time=T0 + dt.timedelta(days=2), actor="job"))
    monkeypatch.undo()
    assert [e.event_type for e in registry.get(record.record_id).events] == [EventType.GIVEN, EventType.WITHDRAWN]


def _record_many(url: str, worker: int, count: int) -> None:
    registry = ConsentRegistry(url)
    for index in range(count):
        registry.add(new_record(f"w{worker}", [Purpose.EVALUATION], controller="C", jurisdiction="EU",
                                actor=f"writer{worker}", given_at=T0 + dt.timedelta(seconds=index)))


def test_eight_processes_record_consent_at_once_on_postgres(postgres_url):
    ConsentRegistry(postgres_url)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(postgres_url, worker, 25)) for worker in range(8)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    assert [process.exitcode for process in workers] == [0] * 8
    registry = ConsentRegistry(postgres_url)
    for worker in range(8):
        records = registry.records_for(f"w{worker}")
        assert len(records) == 25 and len({r.record_id for r in records}) == 25


@pytest.mark.parametrize("url, says", [
    ("postgresql://nobody:secret@127.0.0.1:9/nowhere", "cannot open"),
    ("mysql://u@h/db", "unsupported database"),
])
def test_an_unreachable_or_foreign_server_is_one_line_naming_the_store(url, says):
    with pytest.raises(StoreUnavailable) as caught:
        ConsentRegistry(url)
    message = str(caught.value)
    assert message.startswith("consent registry at ") and says in message
    assert "\n" not in message and "secret" not in message


def test_a_workspace_can_point_its_registry_at_postgres(tmp_path, postgres_url):
    from governance import GovernanceContext
    gov = GovernanceContext.init(tmp_path / "gov")
    config = tmp_path / "gov" / "governance.toml"
    config.write_text(config.read_text().replace('registry = "consent.sqlite"', f'registry = "{postgres_url}"'))
    shared = GovernanceContext.load(config)
    assert shared.config.registry == postgres_url
    shared.registry.add(new_record("dora", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="o"))
    assert GovernanceContext.load(config).registry.check("dora", "evaluation").allowed
    assert not (tmp_path / "gov" / "consent.sqlite").exists() and gov.config.registry.name == "consent.sqlite"


def test_a_registry_whose_server_goes_away_fails_in_one_line(postgres_cluster, postgres_url):
    registry = ConsentRegistry(postgres_url)
    postgres_cluster.allow_connections(postgres_url, False)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            registry.add(new_record("gail", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="o"))
    finally:
        postgres_cluster.allow_connections(postgres_url, True)
    message = str(caught.value)
    assert message.startswith("consent registry at ") and "\n" not in message and postgres_cluster.password not in message
    assert registry.records_for("gail") == []
