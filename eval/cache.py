"""A content-addressed result cache: (namespace, content hash) -> record, in one SQLite file.

The namespace names what produced the record — the model ids with their weight-file hashes and the
metric version — so changing a model or a metric's code invalidates exactly its own records. The
content hash is the sha256 of the input's bytes, so a renamed or copied image is still a hit and an
edited one is a miss. Records are dicts of numpy arrays and JSON values, stored as a JSON header
followed by the arrays' raw bytes (never pickled: a cache file must not be able to run code).

A cache is only ever a shortcut, never a reason for a run to fail or to be wrong:
- a record that does not decode is a miss (and is overwritten by the fresh result);
- a file that is not a usable database (random bytes, truncated, a wrong schema, a folder in its
  place) is moved aside — the warning says where — and a new one is started;
- a cache that cannot be written (read-only file or folder, a full disk) is replaced by an in-memory
  one for the run, and the file is left as it is.
Every message names the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

from eval.models import user_cache_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS records_v2 (
    namespace TEXT NOT NULL,
    content TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, content)
)
"""
COLUMNS = ["namespace", "content", "value"]
QUERY_CHUNK = 500


class CacheError(RuntimeError):
    """The cache file cannot be used and cannot be set aside (the message names it)."""


def default_cache_path() -> Path:
    return user_cache_dir() / "scores-cache.sqlite"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode(record: dict) -> bytes:
    arrays = {key: np.ascontiguousarray(value) for key, value in record.items() if isinstance(value, np.ndarray)}
    if any(array.dtype.hasobject for array in arrays.values()):
        raise ValueError("object arrays cannot be cached")
    header = json.dumps({
        "json": {key: value for key, value in record.items() if key not in arrays},
        "arrays": [[key, array.dtype.str, list(array.shape)] for key, array in arrays.items()],
    }).encode()
    return len(header).to_bytes(4, "little") + header + b"".join(array.tobytes() for array in arrays.values())


def decode(blob: bytes) -> dict:
    """The record; its arrays are read-only views of `blob`. ValueError when `blob` is not one."""
    try:
        length = int.from_bytes(blob[:4], "little")
        header = json.loads(blob[4 : 4 + length])
        record, offset = dict(header["json"]), 4 + length
        for key, dtype, shape in header["arrays"]:
            dtype = np.dtype(dtype)
            if dtype.hasobject:
                raise ValueError("object array")
            count = int(np.prod(shape, dtype=np.int64))
            record[key] = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += count * dtype.itemsize
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, UnicodeDecodeError) as error:
        raise ValueError(f"undecodable cache record ({type(error).__name__}: {error})") from None
    if offset != len(blob):
        raise ValueError(f"undecodable cache record ({len(blob) - offset} stray bytes)")
    return record


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _is_busy(error: sqlite3.Error) -> bool:
    return any(word in str(error).lower() for word in ("locked", "busy"))


def _is_broken(error: sqlite3.Error) -> bool:
    """The file itself is not a usable cache; other errors (a full disk, an I/O error) are not its fault."""
    return any(word in str(error).lower() for word in ("not a database", "malformed", "corrupt", "no such table",
                                                       "no such column", "has columns"))


class ResultCache:
    """Thread-unsafe, process-safe (SQLite locking) cache. `ResultCache(None)` keeps records in memory."""

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        self.undecodable = 0  # records read back as misses this session
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            return self._create(sqlite3.connect(":memory:"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return self._in_memory(f"cannot create its folder ({error.strerror or error})")
        if self.path.exists() and not self.path.is_file():
            self._set_aside("it is not a regular file")
        for attempt in (1, 2):
            try:
                return self._create(sqlite3.connect(str(self.path), timeout=30))
            except sqlite3.Error as error:
                if _is_busy(error):
                    raise CacheError(f"{self.path}: the cache is locked by another process ({error})") from None
                if not _is_broken(error) or not os.access(self.path.parent, os.W_OK):
                    return self._in_memory(f"it cannot be used ({error})")
                if attempt == 2:
                    raise CacheError(f"{self.path}: cannot open the cache ({error})") from None
                self._set_aside(f"it is not a usable cache database ({error})")
        raise AssertionError("unreachable")

    @staticmethod
    def _create(db: sqlite3.Connection) -> sqlite3.Connection:
        try:
            if db.execute("PRAGMA database_list").fetchone()[2]:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
            db.commit()
            columns = [row[1] for row in db.execute("PRAGMA table_info(records_v2)")]
            if columns != COLUMNS:
                raise sqlite3.DatabaseError(f"table records_v2 has columns {columns}, expected {COLUMNS}")
        except BaseException:
            db.close()
            raise
        return db

    def _in_memory(self, reason: str) -> sqlite3.Connection:
        _warn(f"cache {self.path}: {reason}; keeping results in memory for this run")
        self.path = None
        return self._create(sqlite3.connect(":memory:"))

    def _set_aside(self, reason: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except OSError as error:
            raise CacheError(f"{self.path}: {reason}, and it cannot be moved aside ({error.strerror or error})") from None
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        _warn(f"cache {self.path}: {reason}; moved it to {aside} and started a new cache")

    def _run(self, operation):
        """`operation(db)`, recovering once from a database that turns out broken or read-only."""
        try:
            return operation(self._db)
        except sqlite3.Error as error:
            if self.path is None or _is_busy(error):
                raise CacheError(f"{self.path or 'in-memory cache'}: {error}") from None
            self._db.close()
            if _is_broken(error):
                self._set_aside(f"it is not a usable cache database ({error})")
                self._db = self._connect()
            else:  # read-only, a full disk, an I/O error: the file stays as it is
                self._db = self._in_memory(f"it cannot be used ({error})")
            return operation(self._db)

    def _decoded(self, blob: bytes) -> dict | None:
        try:
            return decode(blob)
        except ValueError as error:
            if not self.undecodable:
                _warn(f"cache {self.path or 'in memory'}: {error}; treating it as a miss")
            self.undecodable += 1
            return None

    def get(self, namespace: str, content: str) -> dict | None:
        return self.get_many(namespace, [content]).get(content)

    def get_many(self, namespace: str, contents: list[str]) -> dict[str, dict]:
        unique = list(dict.fromkeys(contents))

        def select(db: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = []
            for start in range(0, len(unique), QUERY_CHUNK):
                chunk = unique[start : start + QUERY_CHUNK]
                rows += db.execute(
                    f"SELECT content, value FROM records_v2 WHERE namespace = ? AND content IN ({','.join('?' * len(chunk))})",
                    (namespace, *chunk),
                ).fetchall()
            return rows

        found = {}
        for content, value in self._run(select):
            record = self._decoded(value) if isinstance(value, bytes) else None
            if record is not None:
                found[content] = record
        return found

    def put_records(self, records: dict[str, dict[str, dict]]) -> None:
        """{namespace: {content: record}}, committed in one transaction."""
        rows = [(namespace, content, encode(record))
                for namespace, by_content in records.items() for content, record in by_content.items()]

        def insert(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("INSERT OR REPLACE INTO records_v2 (namespace, content, value) VALUES (?, ?, ?)", rows)

        if rows:
            self._run(insert)

    def put_many(self, namespace: str, records: dict[str, dict]) -> None:
        self.put_records({namespace: records})

    def put(self, namespace: str, content: str, record: dict) -> None:
        self.put_many(namespace, {content: record})

    def count(self, namespace_prefix: str = "") -> int:
        return self._run(lambda db: db.execute(
            "SELECT COUNT(*) FROM records_v2 WHERE namespace LIKE ? || '%'", (namespace_prefix,)).fetchone()[0])

    def close(self) -> None:
        self._db.close()


def open_cache(cache: str | Path | ResultCache | bool | None) -> ResultCache:
    """None or True: the user cache file; False: in memory only; a path: that file."""
    if isinstance(cache, ResultCache):
        return cache
    if cache is None or cache is True:
        return ResultCache(default_cache_path())
    if cache is False:
        return ResultCache(None)
    return ResultCache(cache)
