"""The review store: accounts, blind ratings, A/B votes and release decisions, through SQLAlchemy 2.

SQLite in WAL mode is the embedded default (``review.sqlite`` in the governance workspace, or any
path / ``sqlite:///`` URL); ``postgresql://...`` puts it on a shared server (psycopg 3), because every
statement here is portable SQLAlchemy Core/ORM. The schema is created and versioned on open by
``governance.database.open_store`` (concurrent first opens on a server are serialised there); a
server that cannot be reached is one ``StoreUnavailable`` line naming the review store.

A row is committed first with ``audit_seq`` NULL, then its audit entry is written, then the row
gets the entry's ``seq``: a row still NULL after a crash is found by ``unaudited()`` and reconciled
at start-up (``eval.review.recorder``).
"""
from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from sqlalchemy import (BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint,
                        event, func, select, update)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from governance.database import open_store, reported

SCHEMA_VERSION = 1
ROLES = ("reviewer", "approver", "admin")
OUTCOMES = ("left", "right", "tie", "both_bad")
DECISIONS = ("approve", "reject")
FLAGS = ("copy", "not_same", "artefacts", "unsafe", "other")


DATABASE_ENV = "IDAVATAR_REVIEW_DATABASE"


def workspace_store(workspace: Path, database: str | Path | None = None) -> str | Path:
    """Where a workspace's review store is: ``database``, else $IDAVATAR_REVIEW_DATABASE, else the
    workspace's ``review_store``, else review.sqlite beside its governance.toml."""
    chosen = database or os.environ.get(DATABASE_ENV)
    if chosen:
        return chosen
    if workspace.is_file():
        from governance import GovernanceContext

        configured = GovernanceContext.load(workspace).config.review_store
        if configured:
            return configured
    return workspace.resolve().parent / "review.sqlite"


class StoreError(ValueError):
    pass


class AlreadyRecorded(StoreError):
    """The reviewer already rated this image (or voted on this pair)."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # stored naive, always UTC


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class Setting(Base):
    __tablename__ = "review_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Account(Base):
    __tablename__ = "review_accounts"
    account_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    api_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class Rating(Base):
    __tablename__ = "review_ratings"
    __table_args__ = (UniqueConstraint("run_id", "line", "reviewer", name="one_rating_per_reviewer"),)
    rating_id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(String(200), index=True)
    line: Mapped[int] = mapped_column(Integer)
    image_sha256: Mapped[str] = mapped_column(String(71))
    system: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    prompt_category: Mapped[str] = mapped_column(Text)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reviewer: Mapped[str] = mapped_column(ForeignKey("review_accounts.name"))
    likeness: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prompt_fidelity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quality: Mapped[int | None] = mapped_column(Integer, nullable=True)
    flag_copy: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_not_same: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_artefacts: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_unsafe: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_other: Mapped[bool] = mapped_column(Boolean, default=False)
    other_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)
    time_spent_s: Mapped[float] = mapped_column(Float)
    presented_position: Mapped[int] = mapped_column(Integer)
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Vote(Base):
    __tablename__ = "review_votes"
    __table_args__ = (UniqueConstraint("run_id", "pair_id", "reviewer", name="one_vote_per_reviewer"),)
    vote_id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(String(200), index=True)
    pair_id: Mapped[str] = mapped_column(String(64))  # "<lower line>-<higher line>": the pair, whatever the order
    subject: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    system_left: Mapped[str] = mapped_column(Text)
    system_right: Mapped[str] = mapped_column(Text)
    line_left: Mapped[int] = mapped_column(Integer)
    line_right: Mapped[int] = mapped_column(Integer)
    image_left: Mapped[str] = mapped_column(String(71))
    image_right: Mapped[str] = mapped_column(String(71))
    reviewer: Mapped[str] = mapped_column(ForeignKey("review_accounts.name"))
    outcome: Mapped[str] = mapped_column(String(16))
    winner: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)
    time_spent_s: Mapped[float] = mapped_column(Float)
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Decision(Base):
    __tablename__ = "review_decisions"
    decision_id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(String(200), index=True)
    line: Mapped[int] = mapped_column(Integer)
    image_sha256: Mapped[str] = mapped_column(String(71))
    system: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    approver: Mapped[str] = mapped_column(ForeignKey("review_accounts.name"))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)
    time_spent_s: Mapped[float] = mapped_column(Float)
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


JUDGMENTS = {"rating": Rating, "vote": Vote, "decision": Decision}
_ID_COLUMN = {Rating: "rating_id", Vote: "vote_id", Decision: "decision_id"}
_COLUMNS = {
    "ratings": ["rating_id", "run_id", "line", "image_sha256", "system", "subject", "prompt", "prompt_category",
                "seed", "reviewer", "likeness", "prompt_fidelity", "quality", "flag_copy", "flag_not_same",
                "flag_artefacts", "flag_unsafe", "flag_other", "other_text", "skipped", "created", "time_spent_s",
                "presented_position", "audit_seq"],
    "votes": ["vote_id", "run_id", "pair_id", "subject", "prompt", "seed", "system_left", "system_right", "line_left",
              "line_right", "image_left", "image_right", "reviewer", "outcome", "winner", "created", "time_spent_s",
              "audit_seq"],
    "decisions": ["decision_id", "run_id", "line", "image_sha256", "system", "subject", "approver", "decision",
                  "reason", "created", "time_spent_s", "audit_seq"],
}
_TABLE_OF_FRAME = {"ratings": Rating, "votes": Vote, "decisions": Decision}
_NULLABLE_INTS = ("line", "seed", "likeness", "prompt_fidelity", "quality", "audit_seq", "line_left", "line_right")
_BOOLS = tuple(f"flag_{flag}" for flag in FLAGS) + ("skipped",)


STORE = "review store"


def _review_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=FULL")  # a committed row survives a power cut, not only a crash
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class ReviewStore:
    """All reads and writes of the review app. Every write method commits before it returns.

    A write the server fails (down, restarting) raises ``StoreUnavailable``; nothing of it is kept."""

    def __init__(self, url: str | Path):
        self.url = str(url)
        self.engine = open_store(self.url, store=STORE, metadata=Base.metadata, version=SCHEMA_VERSION)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _review_pragmas)
            self.engine.dispose()  # the connection that created the schema predates the listener
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with reported(STORE, self.url), self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # -- settings and accounts ---------------------------------------------------------------------

    def setting(self, key: str, default_factory) -> str:
        """A stored setting, created with `default_factory()` the first time it is asked for."""
        with self.session() as session:
            row = session.get(Setting, key)
            if row is not None:
                return row.value
        try:
            with self.session() as session:
                session.add(Setting(key=key, value=default_factory()))
        except IntegrityError:  # another process created it first: use theirs
            pass
        with self.session() as session:
            return session.get(Setting, key).value

    def add_account(self, name: str, role: str, password_hash: str) -> Account:
        if role not in ROLES:
            raise StoreError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        try:
            with self.session() as session:
                account = Account(name=name, role=role, password_hash=password_hash, active=True)
                session.add(account)
        except IntegrityError:
            raise StoreError(f"an account named {name!r} already exists") from None
        return account

    def account(self, name: str) -> Account | None:
        with self.session() as session:
            return session.scalar(select(Account).where(Account.name == name))

    def account_by_id(self, account_id: int) -> Account | None:
        with self.session() as session:
            return session.get(Account, account_id)

    def account_by_token(self, token_hash: str) -> Account | None:
        with self.session() as session:
            return session.scalar(select(Account).where(Account.api_token_hash == token_hash))

    def accounts(self) -> list[Account]:
        with self.session() as session:
            return list(session.scalars(select(Account).order_by(Account.name)))

    def update_account(self, name: str, **values) -> None:
        with self.session() as session:
            changed = session.execute(update(Account).where(Account.name == name).values(**values)).rowcount
        if not changed:
            raise StoreError(f"no account named {name!r}")

    # -- judgments ---------------------------------------------------------------------------------

    def add(self, row: Rating | Vote | Decision) -> Rating | Vote | Decision:
        """Insert one judgment (audit_seq still NULL) and commit it."""
        try:
            with self.session() as session:
                session.add(row)
        except IntegrityError:
            what = "rated this image" if isinstance(row, Rating) else "voted on this pair"
            raise AlreadyRecorded(f"{row.reviewer!r} has already {what}") from None
        return row

    def mark_audited(self, row: Rating | Vote | Decision, seq: int) -> None:
        table = type(row)
        key = getattr(table, _ID_COLUMN[table])
        with self.session() as session:
            session.execute(update(table).where(key == getattr(row, _ID_COLUMN[table])).values(audit_seq=seq))
        row.audit_seq = seq

    def unaudited(self) -> list[Rating | Vote | Decision]:
        """Judgments committed without their audit entry (a crash between the two writes)."""
        with self.session() as session:
            return [row for table in JUDGMENTS.values()
                    for row in session.scalars(select(table).where(table.audit_seq.is_(None)))]

    def rated_lines(self, run_id: str, reviewer: str) -> set[int]:
        """Lines the reviewer rated or skipped."""
        with self.session() as session:
            return set(session.scalars(select(Rating.line).where(Rating.run_id == run_id,
                                                                 Rating.reviewer == reviewer)))

    def rating_counts(self, run_id: str) -> dict[int, int]:
        """{line: ratings given (skips not counted)}."""
        with self.session() as session:
            rows = session.execute(select(Rating.line, func.count()).where(
                Rating.run_id == run_id, Rating.skipped.is_(False)).group_by(Rating.line))
            return {line: count for line, count in rows}

    def ratings_for(self, run_id: str, line: int) -> list[Rating]:
        with self.session() as session:
            return list(session.scalars(select(Rating).where(Rating.run_id == run_id, Rating.line == line)
                                        .order_by(Rating.created)))

    def voted_pairs(self, run_id: str, reviewer: str) -> set[str]:
        with self.session() as session:
            return set(session.scalars(select(Vote.pair_id).where(Vote.run_id == run_id, Vote.reviewer == reviewer)))

    def vote_counts(self, run_id: str) -> dict[str, int]:
        with self.session() as session:
            rows = session.execute(select(Vote.pair_id, func.count()).where(Vote.run_id == run_id)
                                   .group_by(Vote.pair_id))
            return {pair: count for pair, count in rows}

    def vote(self, vote_id: str) -> Vote | None:
        with self.session() as session:
            return session.get(Vote, vote_id)

    def decisions_for(self, run_id: str, line: int | None = None) -> list[Decision]:
        """Decisions in the order they were made."""
        query = select(Decision).where(Decision.run_id == run_id)
        if line is not None:
            query = query.where(Decision.line == line)
        with self.session() as session:
            return list(session.scalars(query.order_by(Decision.created, Decision.audit_seq)))

    def count(self, kind: str) -> int:
        table = JUDGMENTS[kind]
        with self.session() as session:
            return session.scalar(select(func.count()).select_from(table))

    # -- export ------------------------------------------------------------------------------------

    def export_frames(self, run_id: str | None = None) -> dict[str, pd.DataFrame]:
        """{"ratings", "votes", "decisions"}: one DataFrame each, typed for analysis (nullable Int64 scores,
        bool flags, UTC timestamps), optionally for one run."""
        frames = {}
        with self.session() as connection:
            for name, table in _TABLE_OF_FRAME.items():
                query = select(*(getattr(table, column) for column in _COLUMNS[name]))
                if run_id is not None:
                    query = query.where(table.run_id == run_id)
                rows = connection.execute(query).all()
                frames[name] = _typed(pd.DataFrame(rows, columns=_COLUMNS[name]))
        return frames


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for column in frame.columns:
        if column in _NULLABLE_INTS:
            frame[column] = pd.array(frame[column].tolist(), dtype="Int64")
        elif column in _BOOLS:
            frame[column] = frame[column].astype(bool)
        elif column == "created":
            frame[column] = pd.to_datetime(frame[column], utc=True)
        elif column == "time_spent_s":
            frame[column] = frame[column].astype(float)
        elif column == "presented_position":
            frame[column] = frame[column].astype("int64")
        else:
            frame[column] = frame[column].astype(object)
    return frame
