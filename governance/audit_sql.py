"""The audit log on a PostgreSQL server, for writers on many hosts: the same entries, the same proof.

Each row holds one canonical entry line, exactly as the file backend writes it, so signatures,
the hash chain, C2SP checkpoints and the RFC 9162 root are the same bytes and ``verify_log`` checks
them unchanged. An append is one transaction that takes a transaction-scoped advisory lock, reads
the last sequence number and hash, and inserts the next entry; the primary key on ``seq`` makes a
fork impossible even if the lock were bypassed. ``export`` writes the JSONL file and checkpoint
folder that ``audit verify --log`` and Go's note verifier read.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from governance.audit_log import (
    GENESIS, AuditVerification, build_entry, check_append, checkpoint_of, line_hash, parse_entries, verify_log,
)
from governance.checkpoint import Checkpoint, CheckpointStore, StoredCheckpoint, VerifierKey
from governance.database import StoreUnavailable, display, first_line, open_store
from governance.files import write_atomically

_metadata = sa.MetaData()
_entries = sa.Table(
    "audit_entries", _metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("hash", sa.String(71), nullable=False),
)
_checkpoints = sa.Table(
    "audit_checkpoints", _metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("note", sa.Text, nullable=False),
)
_APPEND_LOCK = 0x1DA7A0D1  # the advisory lock every appender takes (one per database)
_EXCLUSIVE_LOCK = 0x1DA7A0D2  # held through a whole read-then-append decision (``exclusive``)
_RETRY_SECONDS = 30.0


class AuditStoreError(RuntimeError):
    """The server failed an append in a way that leaves its outcome unknown; the message says what to do."""


class SqlAuditLog:
    """An append-only, tamper-evident log in a PostgreSQL database (``postgresql://...``)."""

    def __init__(self, url: str, *, signing_key: Ed25519PrivateKey | None = None,
                 public_key: Ed25519PublicKey | None = None, checkpoint_every: int = 256,
                 origin: str | None = None):
        self.url = url
        self.where = f"audit log at {display(url)}"
        self.engine = open_store(url, store="audit log", metadata=_metadata, version=1)
        if self.engine.dialect.name != "postgresql":
            raise StoreUnavailable(f"{self.where}: a database audit log needs PostgreSQL; use a file path otherwise")
        self.signing_key = signing_key
        self.public_key = public_key or (signing_key.public_key() if signing_key else None)
        self.checkpoint_every = checkpoint_every
        self.origin = origin

    # -- appending --------------------------------------------------------------------------------

    def append(self, *, actor: str, action: str, outcome: str = "ok", subject: str | None = None,
               object: str | None = None, role: str | None = None,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one entry and return it (with its ``seq``); waits out a server restart."""
        check_append(self.signing_key, self.where, outcome)
        fields = dict(actor=actor, role=role, action=action, subject=subject, object=object, outcome=outcome,
                      details=details)
        entry = self._retrying(lambda connection: self._append(connection, fields))
        if self.checkpoint_every and (entry["seq"] % self.checkpoint_every == 0 or entry["seq"] == 1):
            self._retrying(lambda connection: self._store_checkpoint(connection, entry["seq"]))
        return entry

    def _append(self, connection: sa.Connection, fields: dict[str, Any]) -> dict[str, Any]:
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK})
        last = connection.execute(sa.select(_entries.c.seq, _entries.c.hash)
                                  .order_by(_entries.c.seq.desc()).limit(1)).first()
        seq, prev = (last.seq, last.hash) if last else (0, GENESIS)
        entry, line = build_entry(seq + 1, prev, self.signing_key, **fields)
        connection.execute(_entries.insert().values(seq=entry["seq"], line=line.decode("utf-8"),
                                                    hash=line_hash(line)))
        return entry

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """A section that no other ``exclusive()`` on this database, on any host, runs beside (see
        ``AuditLog.exclusive``): a session advisory lock, which the server drops if the holder dies."""
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _EXCLUSIVE_LOCK})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _EXCLUSIVE_LOCK})
                connection.commit()

    def checkpoint(self) -> str:
        """Sign and store a checkpoint of the log as it is now; returns where it is kept."""
        if self.signing_key is None:
            raise PermissionError(f"{self.where}: no audit signing key configured")
        return self._retrying(lambda connection: self._store_checkpoint(connection, None))

    def _store_checkpoint(self, connection: sa.Connection, size: int | None) -> str:
        """Sign the first ``size`` entries (None: all); a note already stored for that size is kept."""
        query = sa.select(_entries.c.line).order_by(_entries.c.seq)
        if size is not None:
            query = query.where(_entries.c.seq <= size)
        checkpoint = checkpoint_of((line.encode("utf-8") for line in connection.execute(query).scalars()),
                                   self.origin)
        if checkpoint.size and not connection.execute(sa.select(sa.func.count()).select_from(_checkpoints)
                                                      .where(_checkpoints.c.size == checkpoint.size)).scalar():
            try:
                with connection.begin_nested():
                    connection.execute(_checkpoints.insert().values(size=checkpoint.size,
                                                                    note=checkpoint.sign(self.signing_key)))
            except IntegrityError:
                pass  # another writer signed the same tree first: the same statement
        return f"{self.where}, checkpoint of {checkpoint.size} entries"

    def _retrying(self, work):
        """Run ``work`` in one transaction; retry while the server cannot be reached, never after COMMIT was sent."""
        deadline = time.monotonic() + _RETRY_SECONDS
        while True:
            try:
                connection = self.engine.connect()
            except OperationalError as error:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"{self.where}: server unreachable for {_RETRY_SECONDS:.0f} s: "
                                           f"{first_line(error)}") from None
                time.sleep(0.5)
                continue
            with connection:
                try:
                    transaction = connection.begin()
                    result = work(connection)
                except (OperationalError, DBAPIError) as error:
                    if not getattr(error, "connection_invalidated", False) and not isinstance(error, OperationalError):
                        raise
                    if time.monotonic() > deadline:
                        raise StoreUnavailable(f"{self.where}: {first_line(error)}") from None
                    time.sleep(0.5)
                    continue  # nothing was committed: the whole transaction is redone
                try:
                    transaction.commit()
                except (OperationalError, DBAPIError) as error:
                    raise AuditStoreError(
                        f"{self.where}: the connection failed while committing ({first_line(error)}); the "
                        "entry may or may not be in the log: run `python -m governance audit verify`") from None
                return result

    # -- reading ----------------------------------------------------------------------------------

    def lines(self) -> Iterator[bytes]:
        """Every entry line in sequence order, streamed in batches."""
        with self.engine.connect() as connection:
            result = connection.execution_options(yield_per=2000).execute(
                sa.select(_entries.c.line).order_by(_entries.c.seq))
            for line in result.scalars():
                yield line.encode("utf-8")

    def stored_checkpoints(self) -> list[StoredCheckpoint]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(_checkpoints).order_by(_checkpoints.c.size)).all()
        return [StoredCheckpoint(f"{self.where} #{row.size}", row.size, row.note) for row in rows]

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, parsed (no verification)."""
        return list(parse_entries(self.lines()))

    def verify(self, *, allow_unchecked_tail: int | None = None, state: Checkpoint | None = None,
               witnesses: Sequence[VerifierKey] = ()) -> AuditVerification:
        if self.public_key is None:
            raise ValueError("verifying the audit log needs its public key")
        return verify_log(self.lines(), self.stored_checkpoints(), self.public_key, origin=self.origin,
                          checkpoint_every=self.checkpoint_every, allow_unchecked_tail=allow_unchecked_tail,
                          state=state, witnesses=witnesses)

    def export(self, to: str | Path) -> tuple[Path, Path]:
        """Write the log as the file backend's JSONL and its checkpoints as ``<to>.checkpoints/``."""
        to = Path(to)
        folder = to.with_name(to.name + ".checkpoints")
        checkpoints = self.stored_checkpoints()  # read first: every one is then covered by the lines below
        write_atomically(to, b"".join(line + b"\n" for line in self.lines()))
        store = CheckpointStore(folder)
        for checkpoint in checkpoints:
            write_atomically(store.path_for(checkpoint.claimed_size), checkpoint.note.encode("utf-8"))
        return to, folder

