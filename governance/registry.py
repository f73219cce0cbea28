"""The consent registry: records and their events in SQLite, and the one consent gate, ``check``."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from governance.consent import ConsentEvent, ConsentRecord, EventType, Purpose, Refusal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    record_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_subject ON records(subject);
CREATE TABLE IF NOT EXISTS events (
    record_id TEXT NOT NULL REFERENCES records(record_id),
    position INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (record_id, position)
);
"""

# A refusal from a record that does grant the purpose says more than "purpose not granted".
_REFUSAL_PRIORITY = [Refusal.WITHDRAWN, Refusal.EXPIRED, Refusal.NOT_YET_VALID,
                     Refusal.PURPOSE_NOT_GRANTED, Refusal.NO_RECORD]


@dataclass(frozen=True)
class ConsentDecision:
    subject: str
    purpose: Purpose
    at: dt.datetime
    allowed: bool
    reason: str  # "allowed" or a Refusal value
    record_id: str | None

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else f"refused: {self.reason}"
        record = f" (record {self.record_id})" if self.record_id else ""
        return f"{self.subject} / {self.purpose.value} at {self.at.isoformat()}: {verdict}{record}"


class ConsentRefused(PermissionError):
    def __init__(self, decision: ConsentDecision):
        super().__init__(str(decision))
        self.decision = decision


class UnknownRecord(KeyError):
    pass


class ConsentRegistry:
    """Consent records in a SQLite database file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            with db:
                yield db

    def add(self, record: ConsentRecord) -> ConsentRecord:
        with self._transaction() as db:
            db.execute("INSERT INTO records VALUES (?, ?, ?)", (
                record.record_id, record.subject, record.model_dump_json(exclude={"events"})))
            db.executemany("INSERT INTO events VALUES (?, ?, ?)", [
                (record.record_id, position, event.model_dump_json())
                for position, event in enumerate(record.events)])
        return record

    def get(self, record_id: str) -> ConsentRecord:
        with self._transaction() as db:
            row = db.execute("SELECT body FROM records WHERE record_id = ?", (record_id,)).fetchone()
            if row is None:
                raise UnknownRecord(f"no consent record {record_id!r} in {self.path}")
            return self._load(db, record_id, row[0])

    def records_for(self, subject: str) -> list[ConsentRecord]:
        with self._transaction() as db:
            rows = db.execute("SELECT record_id, body FROM records WHERE subject = ? ORDER BY rowid",
                              (subject,)).fetchall()
            return [self._load(db, record_id, body) for record_id, body in rows]

    @staticmethod
    def _load(db: sqlite3.Connection, record_id: str, body: str) -> ConsentRecord:
        events = [json.loads(row[0]) for row in db.execute(
            "SELECT body FROM events WHERE record_id = ? ORDER BY position", (record_id,))]
        return ConsentRecord.model_validate({**json.loads(body), "events": events})

    def add_event(self, record_id: str, event: ConsentEvent) -> ConsentRecord:
        """Append an event (validated against the record's history) and return the updated record."""
        updated = self.get(record_id).with_event(event)
        with self._transaction() as db:
            db.execute("INSERT INTO events VALUES (?, ?, ?)",
                       (record_id, len(updated.events) - 1, event.model_dump_json()))
        return updated

    def withdraw(self, subject: str, *, actor: str, reason: str | None = None,
                 at: dt.datetime | None = None) -> list[ConsentRecord]:
        """Withdraw every record of ``subject`` still in force; returns the records withdrawn."""
        at = at or dt.datetime.now(dt.timezone.utc)
        return [self.add_event(record.record_id, ConsentEvent(
                    event_type=EventType.WITHDRAWN, event_time=at, actor=actor, reason=reason))
                for record in self.records_for(subject) if record.events[-1].event_type is EventType.GIVEN]

    def check(self, subject: str, purpose: Purpose | str, at: dt.datetime | None = None) -> ConsentDecision:
        """The consent gate: may ``subject``'s photos be used for ``purpose`` at ``at`` (default now)?"""
        purpose = Purpose(purpose)
        at = at or dt.datetime.now(dt.timezone.utc)
        if at.tzinfo is None:
            raise ValueError("at: a timezone-aware datetime is required")
        refusals: list[tuple[Refusal, str]] = []
        for record in self.records_for(subject):
            refusal = record.decide(purpose, at)
            if refusal is None:
                return ConsentDecision(subject, purpose, at, True, "allowed", record.record_id)
            refusals.append((refusal, record.record_id))
        reason, record_id = min(refusals, key=lambda r: _REFUSAL_PRIORITY.index(r[0]),
                                default=(Refusal.NO_RECORD, None))
        return ConsentDecision(subject, purpose, at, False, reason.value, record_id)

    def status(self, subject: str, at: dt.datetime | None = None) -> dict[str, ConsentDecision]:
        """The gate's answer for every purpose."""
        return {purpose.value: self.check(subject, purpose, at) for purpose in Purpose}
