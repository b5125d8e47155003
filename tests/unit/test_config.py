"""Settings: embedded defaults under KILN_DATA_DIR, overridden by environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import Settings


def test_embedded_defaults_live_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'kiln.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    assert settings.artifacts == tmp_path / "artifacts"
    assert settings.port == 8000


def test_environment_points_at_postgres_and_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_DATABASE_URL", "postgresql+psycopg://u@db/kiln")
    monkeypatch.setenv("KILN_BROKER_URL", "redis://cache:6379/0")
    monkeypatch.setenv("KILN_PORT", "9000")
    settings = Settings()
    assert (settings.database_url, settings.broker_url, settings.port) == (
        "postgresql+psycopg://u@db/kiln",
        "redis://cache:6379/0",
        9000,
    )
