"""The production shape, shared by the e2e modules: PostgreSQL registry, Redis broker, real API and worker processes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import migrate, postgres_database
from tests.e2e.browser import browser, ui  # noqa: F401 (fixtures: headless Chromium, and a signed-in user's tab on `kiln`)
from tests.e2e.helpers import kiln_env, mint_key, spawn, spawn_api, stop, wait_until_ready
from tests.e2e.stacks import stack_on  # noqa: F401 (a fixture: an API and workers of a test's own)


@pytest.fixture(scope="session")
def kiln(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """API and worker on a database of their own, apart from the one the registry tests empty."""
    with postgres_database("kiln_e2e") as database_url:
        migrate(database_url)
        yield from _run_kiln(database_url, redis_url, tmp_path_factory.mktemp("kiln"))


def _run_kiln(database_url: str, redis_url: str, data_dir: Path) -> Iterator[dict]:
    env = kiln_env(data_dir=str(data_dir), database_url=database_url, broker_url=redis_url)
    headers = mint_key(env)
    logs = [data_dir / "api.log", data_dir / "worker.log"]
    api, port = spawn_api(env, logs[0])  # draws another port if one was bound first
    worker = spawn([sys.executable, "-m", "worker"], env, logs[1])
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", [api, worker], logs)
        yield {"url": f"http://127.0.0.1:{port}", "api": api, "worker": worker, "logs": logs, "data_dir": data_dir,
               "headers": headers, "env": env}  # fmt: skip
    finally:
        stop(api)
        stop(worker)
