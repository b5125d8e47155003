"""Wall time of the digits example job (POST -> succeeded) against the same training run in-process.

Prints, for the embedded defaults (SQLite registry and broker) and for PostgreSQL + Redis:
the job's wall time, its queue wait (created -> started), and the ratio to the in-process
train_and_export of the same spec measured in this run.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.data.builtins import load_builtin  # noqa: E402
from services.spec import JobSpec  # noqa: E402
from services.training.pipeline import train_and_export  # noqa: E402
from tests.conftest import POSTGRES_ADMIN_URL, REDIS_URL, free_port, migrate  # noqa: E402
from tests.e2e.helpers import api_command, kiln_env, spawn, stop, train_digits_and_predict, wait_until_ready  # noqa: E402
from tests.factories import DIGITS_MLP  # noqa: E402

RUNS = 3


def in_process_seconds() -> float:
    torch.set_num_threads(2)
    spec, data = JobSpec.model_validate(DIGITS_MLP), load_builtin("digits")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(RUNS + 1):
            started = time.perf_counter()
            train_and_export(
                spec,
                data,
                device=torch.device("cpu"),
                onnx_path=Path(tmp) / "m.onnx",
                parity_rows=256,
                parity_tolerance=1e-4,
                on_epoch_end=lambda r: None,
            )
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:])  # the first run pays for lazy initialisation


def through_kiln(label: str, **env: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        environment = kiln_env(data_dir=tmp, **env)
        migrate(env.get("database_url") or f"sqlite:///{tmp}/kiln.db")
        logs = [Path(tmp) / "api.log", Path(tmp) / "worker.log"]
        procs = [spawn(api_command(port), environment, logs[0]), spawn([sys.executable, "-m", "worker"], environment, logs[1])]
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", procs, logs)
            walls, waits = [], []
            for _ in range(RUNS):
                result = train_digits_and_predict(f"http://127.0.0.1:{port}")
                job = result["job"]
                walls.append(result["wall_s"])
                waits.append((datetime.fromisoformat(job["started_at"]) - datetime.fromisoformat(job["created_at"])).total_seconds())
        finally:
            for proc in procs:
                stop(proc)
    return statistics.median(walls), statistics.median(waits)


def main() -> None:
    baseline = in_process_seconds()
    print(f"in-process train+export+parity (baseline): {baseline:.2f} s")
    import psycopg

    name = f"kiln_bench_{int(time.time())}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    pg_url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    try:
        for label, env in (
            ("embedded (SQLite + SQLite broker)", {}),
            ("PostgreSQL + Redis", {"database_url": pg_url, "broker_url": REDIS_URL}),
        ):
            wall, wait = through_kiln(label, **env)
            print(f"{label}: job wall {wall:.2f} s (median of {RUNS}), queue wait {wait:.2f} s, wall / baseline = {wall / baseline:.2f}x")
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
