"""The consent registry: records and their events in a SQL store, and the one consent gate, ``check``.

The store is a SQLite file by default or a shared PostgreSQL database (``governance/database.py``);
the schema below is the one definition for both.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from governance.consent import ConsentEvent, ConsentRecord, EventType, Purpose, Refusal
from governance.database import display, is_url, open_store, reported

SCHEMA_VERSION = 1
_STORE = "consent registry"
_metadata = sa.MetaData()
_records = sa.Table(
    "records", _metadata,
    sa.Column("record_id", sa.String(200), primary_key=True),
    sa.Column("subject", sa.String(200), nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),
)
_events = sa.Table(
    "events", _metadata,
    sa.Column("record_id", sa.String(200), sa.ForeignKey("records.record_id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
)

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


class ConcurrentChange(RuntimeError):
    """Another writer changed the same record at the same moment; read it again and retry."""


class ConsentRegistry:
    """Consent records in a SQLite file (a path) or a PostgreSQL database (a ``postgresql://`` URL)."""

    def __init__(self, location: str | Path):
        self.location = location if is_url(location) else Path(location)
        self.engine = open_store(self.location, store=_STORE, metadata=_metadata,
                                 version=SCHEMA_VERSION)

    def add(self, record: ConsentRecord) -> ConsentRecord:
        with reported(_STORE, self.location), self.engine.begin() as db:
            db.execute(_records.insert().values(record_id=record.record_id, subject=record.subject,
                                                body=record.model_dump_json(exclude={"events"})))
            db.execute(_events.insert(), [{"record_id": record.record_id, "position": position,
                                           "body": event.model_dump_json()}
                                          for position, event in enumerate(record.events)])
        return record

    def get(self, record_id: str) -> ConsentRecord:
        with reported(_STORE, self.location), self.engine.connect() as db:
            body = db.execute(sa.select(_records.c.body).where(_records.c.record_id == record_id)).scalar()
            if body is None:
                raise UnknownRecord(f"no consent record {record_id!r} in {display(self.location)}")
            return self._load(db, record_id, body)

    def records_for(self, subject: str) -> list[ConsentRecord]:
        """The subject's records, oldest consent first."""
        with reported(_STORE, self.location), self.engine.connect() as db:
            rows = db.execute(sa.select(_records.c.record_id, _records.c.body)
                              .where(_records.c.subject == subject)).all()
            records = [self._load(db, record_id, body) for record_id, body in rows]
        return sorted(records, key=lambda record: (record.events[0].event_time, record.record_id))

    @staticmethod
    def _load(db: sa.Connection, record_id: str, body: str) -> ConsentRecord:
        events = [json.loads(row) for row in db.execute(
            sa.select(_events.c.body).where(_events.c.record_id == record_id).order_by(_events.c.position)).scalars()]
        return ConsentRecord.model_validate({**json.loads(body), "events": events})

    def add_event(self, record_id: str, event: ConsentEvent) -> ConsentRecord:
        """Append an event (validated against the record's history) and return the updated record.

        The (record, position) key makes two concurrent appends to one record collide instead of
        interleaving: the loser gets ``ConcurrentChange``.
        """
        updated = self.get(record_id).with_event(event)
        try:
            with reported(_STORE, self.location), self.engine.begin() as db:
                db.execute(_events.insert().values(record_id=record_id, position=len(updated.events) - 1,
                                                   body=event.model_dump_json()))
        except IntegrityError:
            raise ConcurrentChange(f"consent record {record_id!r} changed while this event was added; "
                                   "read it again and retry") from None
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
