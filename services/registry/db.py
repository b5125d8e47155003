"""Engines and sessions: SQLite gets WAL and a busy timeout so the API and a worker can share the file."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

# What SQLAlchemy raises when the database is down, restarting, failing over or locked; see database_unavailable.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
# SQLSTATE classes of a lost or refused connection: 08 connection exception, 57P admin shutdown / cannot connect now.
_UNAVAILABLE_SQLSTATES = ("08", "57P")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached right now (worth retrying), rather than that a query is wrong.

    Connection errors, a server shutting down or refusing connections, and SQLite's lock timeout are; a
    missing column, a constraint or a statement timeout are not.
    """
    if isinstance(exc, PoolTimeout):  # every connection is busy waiting on a server that does not answer
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate).startswith(_UNAVAILABLE_SQLSTATES)
    message = str(exc.orig).lower()
    if "sqlite" in type(exc.orig).__module__:
        return "database is locked" in message or "unable to open database" in message
    return True  # a driver error with no SQLSTATE: psycopg's "connection refused" / "server closed the connection"


def make_engine(url: str, *, sqlite_busy_timeout_ms: int = 10_000) -> Engine:
    """An engine for `url`; nothing connects until first use."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_ms / 1000})
        event.listen(engine, "connect", _sqlite_pragmas(sqlite_busy_timeout_ms))
        # BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a
        # read-then-write transaction such as "max(version) + 1" never fails on lock upgrade.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    # connect_timeout: a server that drops packets fails a connection in seconds, not after TCP's minutes.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_timeout=10, connect_args={"connect_timeout": 5})


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # BEGIN is issued by the "begin" listener
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
