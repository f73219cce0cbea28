"""Where a store lives: a plain path is a SQLite file (the embedded default), a URL a shared server.

``postgresql://user@host/db`` (or ``postgresql+psycopg://``) reaches PostgreSQL through psycopg 3.
Each store declares one SQLAlchemy schema and a version; ``open_store`` creates or checks it, so the
same portable SQL serves both backends. Connection problems become one ``StoreUnavailable`` line that
names the store and hides the password.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Union

import sqlalchemy as sa
from pydantic import BeforeValidator
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError

SERVER_SCHEMES = ("postgresql",)

_versions = sa.Table(
    "schema_versions", sa.MetaData(),
    sa.Column("store", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


class StoreUnavailable(RuntimeError):
    """A store that cannot be opened or reached; the message is one line."""


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and "://" in location


def _location(value: object) -> object:
    return value if is_url(value) or isinstance(value, Path) else Path(value) if isinstance(value, str) else value


# A config field naming a store: a ``postgresql://`` URL stays a string, anything else is a path.
StoreLocation = Annotated[Union[str, Path], BeforeValidator(_location)]


def display(location: str | Path) -> str:
    """The location as it may be printed: a URL without its password."""
    if not is_url(location):
        return str(location)
    try:
        return make_url(location).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed URL>"


def _url(location: str | Path, store: str) -> sa.URL:
    if is_url(location) and make_url(location).get_backend_name() == "sqlite":
        location = Path(make_url(location).database)  # a sqlite:/// URL is the file it names
    if not is_url(location):
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        return sa.URL.create("sqlite", database=str(path))
    url = make_url(location)
    if url.get_backend_name() not in SERVER_SCHEMES:
        raise StoreUnavailable(f"{store} at {display(location)}: unsupported database "
                               "(use a file path, sqlite:/// or postgresql://)")
    return url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def open_store(location: str | Path, *, store: str, metadata: sa.MetaData, version: int) -> Engine:
    """An engine for ``store`` at ``location`` with its schema created (or checked) at ``version``."""
    try:
        url = _url(location, store)
        engine = sa.create_engine(url, pool_pre_ping=True,
                                  connect_args={"connect_timeout": 10} if url.get_backend_name() != "sqlite" else {})
    except (ArgumentError, ImportError) as error:
        raise StoreUnavailable(f"{store} at {display(location)}: {error}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.begin() as db:
            if engine.dialect.name == "postgresql":  # concurrent first opens must not race to create tables
                db.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:store))"), {"store": store})
            metadata.create_all(db)
            _versions.create(db, checkfirst=True)
            found = db.execute(sa.select(_versions.c.version).where(_versions.c.store == store)).scalar()
            if found is None:
                db.execute(_versions.insert().values(store=store, version=version))
            elif found > version:
                raise StoreUnavailable(f"{store} at {display(location)}: schema version {found} is newer than "
                                       f"this code's {version}; upgrade idavatar")
    except (OperationalError, DBAPIError) as error:
        raise StoreUnavailable(f"{store} at {display(location)}: cannot open: {first_line(error)}") from None
    return engine


def first_line(error: Exception) -> str:
    """The first line of a driver error: what the server said, without SQLAlchemy's trailer."""
    original = getattr(error, "orig", None)
    text = str(original if original is not None else error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def reported(store: str, location: str | Path) -> Iterator[None]:
    """Database failures inside as one ``StoreUnavailable`` line naming the store; constraint violations pass."""
    try:
        yield
    except IntegrityError:
        raise
    except DBAPIError as error:
        raise StoreUnavailable(f"{store} at {display(location)}: {first_line(error)}") from None
