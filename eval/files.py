"""Reading inputs safely and writing outputs atomically.

Reading: only regular files are opened for content (a FIFO or a device would block or never end), and
the check is made on the opened descriptor, so a file swapped for a FIFO between a check and the open
cannot slip through. Writing: a reader never sees half a file, and a failed run leaves the old file intact.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

BLOCK = 1 << 20
MAX_JSON_BYTES = 256 << 20  # a summary, calibration or thresholds file larger than this is refused unread


class NotARegularFile(OSError):
    """The path names a folder, a FIFO, a device or a socket, not a file to read."""

    def __init__(self, path, mode: int):
        self.path = path
        self.kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        super().__init__(f"{path}: is {self.kind}, not a regular file")


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: str | Path):
    """A binary file object for `path`, refused (NotARegularFile) unless it is a regular file.

    O_NONBLOCK keeps the open of a FIFO from waiting for a writer; the type is then read from the
    descriptor itself."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, mode)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file; OSError (naming the file) when it is not one or exceeds `limit`."""
    with open_regular(path) as handle:
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
    return data


def read_json(path: str | Path):
    """A JSON file's value: read only if it is a regular file under MAX_JSON_BYTES. Raises OSError,
    or ValueError for bad UTF-8 or bad JSON (RecursionError too for absurdly deep nesting)."""
    return json.loads(read_regular(path, limit=MAX_JSON_BYTES).decode("utf-8"))


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(partial_path)`, then move the finished file into place. The partial file is opened
    like any other (the umask applies), so the output keeps ordinary permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a regular file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda partial: partial.write_text(text, encoding="utf-8"))
