"""A content-addressed result cache: (namespace, content hash) -> record, in one SQLite file.

The namespace names what produced the record — the model ids with their weight-file hashes and the
metric version — so changing a model or a metric's code invalidates exactly its own records. The
content hash is the sha256 of the input's bytes, so a renamed or copied image is still a hit and an
edited one is a miss. Records are dicts of numpy arrays and JSON values, stored as a JSON header
followed by the arrays' raw bytes (never pickled: a cache file must not be able to run code).
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import platformdirs

SCHEMA = """
CREATE TABLE IF NOT EXISTS records_v2 (
    namespace TEXT NOT NULL,
    content TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, content)
)
"""
JSON_FIELD = "__json__"


def default_cache_path() -> Path:
    folder = os.environ.get("IDAVATAR_CACHE_DIR") or platformdirs.user_cache_dir("idavatar")
    return Path(folder) / "scores-cache.sqlite"


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
    """The record; its arrays are read-only views of `blob`."""
    length = int.from_bytes(blob[:4], "little")
    header = json.loads(blob[4 : 4 + length])
    record, offset = dict(header["json"]), 4 + length
    for key, dtype, shape in header["arrays"]:
        count = int(np.prod(shape, dtype=np.int64))
        record[key] = np.frombuffer(blob, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)
        offset += count * np.dtype(dtype).itemsize
    return record


class ResultCache:
    """Thread-unsafe, process-safe (SQLite locking) cache. `ResultCache(None)` keeps records in memory."""

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path), timeout=30)
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._db.commit()

    def get(self, namespace: str, content: str) -> dict | None:
        row = self._db.execute(
            "SELECT value FROM records_v2 WHERE namespace = ? AND content = ?", (namespace, content)
        ).fetchone()
        return None if row is None else decode(row[0])

    def get_many(self, namespace: str, contents: list[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        unique = list(dict.fromkeys(contents))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = self._db.execute(
                f"SELECT content, value FROM records_v2 WHERE namespace = ? AND content IN ({','.join('?' * len(chunk))})",
                (namespace, *chunk),
            ).fetchall()
            found.update({content: decode(value) for content, value in rows})
        return found

    def put_many(self, namespace: str, records: dict[str, dict]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO records_v2 (namespace, content, value) VALUES (?, ?, ?)",
                [(namespace, content, encode(record)) for content, record in records.items()],
            )

    def put(self, namespace: str, content: str, record: dict) -> None:
        self.put_many(namespace, {content: record})

    def count(self, namespace_prefix: str = "") -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM records_v2 WHERE namespace LIKE ? || '%'", (namespace_prefix,)
        ).fetchone()[0]

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
