"""Alembic environment: the URL comes from Settings, or from `config.attributes["url"]` in tests."""

from __future__ import annotations

from alembic import context

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


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `alembic upgrade head` against a database")
run_migrations_online()
