"""A real worker process announces itself in SQL while it runs and withdraws on a clean shutdown."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, migrate
from tests.e2e.helpers import kiln_env, spawn, stop


def _healthy(env: dict[str, str]) -> bool:
    return subprocess.run([sys.executable, "-m", "worker.healthcheck"], cwd=ROOT, env=env, timeout=60).returncode == 0


def test_worker_heartbeat_drives_its_healthcheck(tmp_path: Path, redis_url: str) -> None:
    env = kiln_env(data_dir=str(tmp_path), broker_url=redis_url, worker_heartbeat_s="1")
    migrate(f"sqlite:///{tmp_path / 'kiln.db'}")
    assert not _healthy(env)
    worker = spawn([sys.executable, "-m", "worker"], env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while not _healthy(env):
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.5)
    finally:
        assert stop(worker) == 0
    assert not _healthy(env)
