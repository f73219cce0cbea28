"""Where the vault keeps each subject's wrapped data key: files beside the blobs, or a SQL database.

Both stores give the same guarantees: the first key stored for a subject wins (a second "first put"
gets ``False`` and uses the winner's key: a hard link for files, the primary key in SQL), and
shredding removes the key and leaves a tombstone saying when and by whom, in one step.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from governance.database import open_store
from governance.files import write_atomically


@dataclass(frozen=True)
class WrappedKey:
    subject: str
    master_key_id: str
    wrapped_key: bytes


@dataclass(frozen=True)
class Tombstone:
    subject: str
    time: str
    actor: str


class DataKeyStore(Protocol):
    def get(self, subject: str) -> WrappedKey | None: ...
    def create(self, key: WrappedKey) -> bool: ...
    def replace(self, key: WrappedKey) -> None: ...
    def shred(self, subject: str, tombstone: Tombstone) -> bool: ...
    def tombstone(self, subject: str) -> Tombstone | None: ...
    def __iter__(self) -> Iterator[WrappedKey]: ...


class FileKeyStore:
    """``keys/<subject>.key`` (JSON) and ``keys/<subject>.shredded`` under the vault folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, subject: str) -> Path:
        return self.folder / f"{subject}.key"

    def _tombstone_path(self, subject: str) -> Path:
        return self.folder / f"{subject}.shredded"

    @staticmethod
    def _encode(key: WrappedKey) -> bytes:
        return json.dumps({"subject": key.subject, "master_key_id": key.master_key_id,
                           "wrapped_key": key.wrapped_key.hex()}).encode()

    @staticmethod
    def _decode(path: Path) -> WrappedKey:
        stored = json.loads(path.read_text())
        return WrappedKey(stored["subject"], stored["master_key_id"], bytes.fromhex(stored["wrapped_key"]))

    def get(self, subject: str) -> WrappedKey | None:
        path = self._path(subject)
        return self._decode(path) if path.exists() else None

    def create(self, key: WrappedKey) -> bool:
        try:
            write_atomically(self._path(key.subject), self._encode(key), overwrite=False)
        except FileExistsError:
            return False
        return True

    def replace(self, key: WrappedKey) -> None:
        write_atomically(self._path(key.subject), self._encode(key))

    def shred(self, subject: str, tombstone: Tombstone) -> bool:
        path = self._path(subject)
        if not path.exists():
            return False
        with open(path, "r+b") as handle:  # overwrite before unlinking, for what it is worth on this disk
            handle.write(secrets.token_bytes(max(1, path.stat().st_size)))
            handle.flush()
            os.fsync(handle.fileno())
        write_atomically(self._tombstone_path(subject), json.dumps(
            {"subject": subject, "time": tombstone.time, "actor": tombstone.actor}).encode())
        path.unlink()
        return True

    def tombstone(self, subject: str) -> Tombstone | None:
        path = self._tombstone_path(subject)
        if not path.exists():
            return None
        stored = json.loads(path.read_text())
        return Tombstone(subject, stored["time"], stored["actor"])

    def __iter__(self) -> Iterator[WrappedKey]:
        return (self._decode(path) for path in sorted(self.folder.glob("*.key")))


_metadata = sa.MetaData()
_keys = sa.Table(
    "vault_data_keys", _metadata,
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("master_key_id", sa.String(200), nullable=False),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
)
_tombstones = sa.Table(
    "vault_tombstones", _metadata,
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("time", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
)


class SqlKeyStore:
    """Wrapped keys in a database shared by every host (the registry's, when that is a server)."""

    def __init__(self, location: str | Path):
        self.engine = open_store(location, store="vault key store", metadata=_metadata, version=1)

    def get(self, subject: str) -> WrappedKey | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(_keys).where(_keys.c.subject == subject)).first()
        return WrappedKey(row.subject, row.master_key_id, bytes(row.wrapped_key)) if row else None

    def create(self, key: WrappedKey) -> bool:
        try:
            with self.engine.begin() as db:
                db.execute(_keys.insert().values(subject=key.subject, master_key_id=key.master_key_id,
                                                 wrapped_key=key.wrapped_key))
        except IntegrityError:
            return False
        return True

    def replace(self, key: WrappedKey) -> None:
        with self.engine.begin() as db:
            db.execute(_keys.update().where(_keys.c.subject == key.subject)
                       .values(master_key_id=key.master_key_id, wrapped_key=key.wrapped_key))

    def shred(self, subject: str, tombstone: Tombstone) -> bool:
        with self.engine.begin() as db:
            deleted = db.execute(_keys.delete().where(_keys.c.subject == subject)).rowcount
            if deleted:
                db.execute(_tombstones.delete().where(_tombstones.c.subject == subject))
                db.execute(_tombstones.insert().values(subject=subject, time=tombstone.time, actor=tombstone.actor))
        return bool(deleted)

    def tombstone(self, subject: str) -> Tombstone | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(_tombstones).where(_tombstones.c.subject == subject)).first()
        return Tombstone(row.subject, row.time, row.actor) if row else None

    def __iter__(self) -> Iterator[WrappedKey]:
        with self.engine.connect() as db:
            rows = db.execute(sa.select(_keys).order_by(_keys.c.subject)).all()
        return iter([WrappedKey(row.subject, row.master_key_id, bytes(row.wrapped_key)) for row in rows])
