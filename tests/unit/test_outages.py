"""What counts as the registry being unreachable (retry later) rather than a query being wrong, and the key cache."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.registry.db import database_unavailable
from services.registry.entities import ApiKey
from services.usecases.keys import KeyCache, create_key


def _wrapped(orig: Exception, cls: type = OperationalError) -> Exception:
    return cls("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (_wrapped(sqlite3.OperationalError("database is locked")), True),
        (_wrapped(sqlite3.OperationalError("no such column: jobs.lease_owner")), False),
        (_wrapped(psycopg.OperationalError("connection failed: Connection refused")), True),
        (_wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator command")), True),
        (_wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")), True),
        (_wrapped(psycopg.errors.QueryCanceled("canceling statement due to statement timeout")), False),
        (_wrapped(psycopg.errors.UndefinedColumn("column does not exist"), ProgrammingError), False),
        (PoolTimeout("QueuePool limit of size 5 overflow 10 reached"), True),
        (ValueError("not a database error"), False),
    ],
)
def test_only_connection_trouble_counts_as_unavailable(error: Exception, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable


class Registry:
    """A unit of work factory whose database can be taken away."""

    def __init__(self, key: ApiKey | None) -> None:
        self.key, self.up, self.queries = key, True, 0

    def __call__(self) -> Registry:
        return self

    def __enter__(self) -> Registry:
        self.queries += 1
        if not self.up:
            raise _wrapped(psycopg.OperationalError("server closed the connection unexpectedly"))
        return self

    def __exit__(self, *_: object) -> None:
        pass

    @property
    def keys(self) -> Registry:
        return self

    def active_by_hash(self, _: str) -> ApiKey | None:
        return self.key

    def add(self, **fields: object) -> ApiKey:
        self.key = ApiKey(uuid.uuid4(), str(fields["name"]), str(fields["prefix"]), tuple(fields["scopes"]), datetime.now(UTC))  # type: ignore[arg-type]
        return self.key

    def commit(self) -> None:
        pass


def test_a_known_key_keeps_working_through_an_outage_and_junk_tokens_cost_no_query() -> None:
    registry = Registry(None)
    _, token = create_key(name="app", scopes=["predict"], uow_factory=registry)  # type: ignore[arg-type]
    cache = KeyCache(registry, ttl_s=0.0)  # type: ignore[arg-type]
    assert cache.lookup(token) is not None
    registry.up = False
    key = cache.lookup(token)  # expired, the database is away: the key seen before still works
    assert key is not None and key.scopes == ("predict",)
    cache.ttl_s = 60.0
    assert cache.fresh(token) == (True, key)  # and is trusted for another ttl, instead of a query per request
    with pytest.raises(OperationalError):  # a token never seen cannot be vouched for
        cache.lookup(token[:-1] + ("A" if token[-1] != "A" else "B"))
    queries = registry.queries
    assert cache.lookup("kiln_nonsense") is None and cache.lookup("x" * 500) is None
    assert cache.fresh("kiln_nonsense") == (True, None)  # answered without a query, and without taking a place
    assert registry.queries == queries and "kiln_nonsense" not in cache._seen


def test_the_cache_forgets_the_least_recently_used_first() -> None:
    registry = Registry(None)
    cache = KeyCache(registry, ttl_s=60.0, capacity=2)  # type: ignore[arg-type]
    tokens = [create_key(name=f"k{i}", scopes=["read"], uow_factory=registry)[1] for i in range(3)]  # type: ignore[arg-type]
    for token in tokens:
        cache.lookup(token)
    assert [cache.fresh(t)[0] for t in tokens] == [False, True, True]
