"""Stacks of real processes for fault tests: an API and workers on a PostgreSQL database of their own, with recovery
timings shortened (heartbeat 0.5 s, silent after 3 s, sweeps every 0.5 s) so a recovery takes seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import migrate, postgres_database
from tests.e2e.helpers import kiln_env, mint_key, spawn, spawn_api, stop, wait_until_ready

FAST_RECOVERY = {"job_heartbeat_s": "0.5", "job_stale_after_s": "3", "sweep_interval_s": "0.5", "redispatch_after_s": "2",
                 "max_attempts": "3"}  # fmt: skip


class Stack:
    """An API and workers on their own database, queues and data folder; workers can be killed and started again."""

    def __init__(self, tmp: Path, database_url: str, broker_url: str, **settings: str) -> None:
        self.tmp = tmp
        self.env = kiln_env(data_dir=str(tmp), database_url=database_url, broker_url=broker_url, **(FAST_RECOVERY | settings))
        self.headers = mint_key(self.env)
        self.api, self.port = spawn_api(self.env, tmp / "api.log")
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.start_worker()

    def start_worker(self) -> None:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        self.workers.append(spawn([sys.executable, "-m", "worker"], self.env, log))
        wait_until_ready(self.url, [self.api, self.workers[-1]], [self.tmp / "api.log", log])

    def kill_worker(self) -> None:
        """SIGKILL the worker's whole process group: the main process and the pool child training."""
        worker = self.workers[-1]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(p.read_text(errors="replace")[-tail:] for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        for proc in [self.api, *self.workers]:
            if proc.poll() is None:
                stop(proc)


@pytest.fixture
def stack_on(tmp_path: Path) -> Iterator[Any]:
    stacks: list[Stack] = []

    def start(broker_url: str, database: str | None = None, **settings: str) -> Stack:
        """A stack on `broker_url` and `database` (default: a new database on the shared PostgreSQL), with `settings`
        (KILN_ settings by their lower-case names) over the fast recovery ones."""
        database = database or stack_databases.enter_context(postgres_database("kiln_faults"))
        migrate(database)
        stacks.append(Stack(_mkdir(tmp_path / f"stack{len(stacks)}"), database, broker_url, **settings))
        return stacks[-1]

    with contextlib.ExitStack() as stack_databases:
        try:
            yield start
        finally:
            for s in stacks:
                s.close()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
