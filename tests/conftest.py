"""Shared fixtures: real PostgreSQL and Redis (started by `make test`), migrated databases, free ports."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.config import Settings
from services.registry.db import make_engine
from services.registry.tables import Base
from services.registry.unit_of_work import SqlUnitOfWork, connect_registry
from tests.s3_server import WeedServer

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get("KILN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KILN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def migrate(url: str, revision: str = "head", *, down: bool = False) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    (command.downgrade if down else command.upgrade)(config, revision)


@contextlib.contextmanager
def postgres_database(prefix: str = "kiln_test") -> Iterator[str]:
    """A database of its own on the real PostgreSQL server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


# Each test session's workers and API use queues of their own, so sessions can share one Redis.
QUEUE_PREFIX = f"test-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis; this session's queues are named with QUEUE_PREFIX."""
    redis.Redis.from_url(REDIS_URL).ping()
    return REDIS_URL


@pytest.fixture(scope="session")
def migrated_postgres(postgres_url: str) -> str:
    migrate(postgres_url)
    return postgres_url


def _truncate_all(url: str) -> None:
    """Empty every table the registry defines (api_keys included), so no test sees another's rows."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated registry on each backend: SQLite (the embedded default) and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kiln.db'}"
        migrate(url)
        return url
    url = request.getfixturevalue("migrated_postgres")
    _truncate_all(url)
    return url


@pytest.fixture
def uow_factory(database_url: str) -> Iterator[Callable[[], SqlUnitOfWork]]:
    engine, factory = connect_registry(database_url)
    yield factory
    engine.dispose()


def admin_headers(database_url: str, scopes: tuple[str, ...] = ("admin",)) -> dict[str, str]:
    """A key minted on that registry, as the Authorization header a client sends."""
    from services.usecases.keys import create_key

    engine, uow_factory = connect_registry(database_url)
    try:
        _, token = create_key(name="tests", scopes=list(scopes), uow_factory=uow_factory)
    finally:
        engine.dispose()
    return {"Authorization": f"Bearer {token}"}


def kiln_client(settings: Settings) -> TestClient:
    """The app in-process, with an admin key (auth is on, as by default); use it as a context manager."""
    from api.main import create_app

    return TestClient(create_app(settings), headers=admin_headers(settings.database_url))


def embedded_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings on the embedded defaults under `data_dir`, with the registry migrated."""
    settings = Settings(data_dir=data_dir, **overrides)  # type: ignore[arg-type]
    settings.ensure_dirs()
    migrate(settings.database_url)
    return settings


def free_port() -> int:
    """A port free now, drawn at random below the kernel's ephemeral range, so no outgoing connection takes it first.

    A port the kernel hands out (bind to 0) is an ephemeral one that any client socket on the machine may be given
    before the child process binds it; one below that range is only taken by a server that asks for it by number.
    """
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(max(1024, low - 20000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use: draw again
                continue
            return port
    raise RuntimeError("no free port found below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """A real S3 server (SeaweedFS' `weed mini`) on loopback for the session; each test takes a bucket of its own."""
    server = WeedServer(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()
