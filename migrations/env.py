"""Alembic environment: the URL comes from Settings, or from `config.attributes["url"]` in tests."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from services.config import Settings
from services.registry.db import make_engine
from services.registry.tables import Base

config = context.config


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return url
    settings = Settings()
    settings.ensure_dirs()
    return settings.database_url


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    """SQLite alters a table by copying it and dropping the original, which rows of other tables may point to
    (model_aliases -> model_versions): with foreign keys enforced, the drop fails. Alembic's advice is to turn
    them off for the migration; the pragma only takes effect outside a transaction, hence the raw connection."""
    connection.connection.driver_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")  # type: ignore[union-attr]


def _check_foreign_keys(connection: Connection) -> None:
    """With enforcement off, a migration could leave a dangling reference: refuse to commit one."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"the migration left rows pointing at nothing (table, rowid, parent, fk): {broken[:10]}")


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,  # SQLite alters tables by copying them
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                _check_foreign_keys(connection)
        if sqlite:
            _sqlite_foreign_keys(connection, on=True)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `alembic upgrade head` against a database")
run_migrations_online()
