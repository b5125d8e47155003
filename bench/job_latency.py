"""Wall time of a whole job (POST -> succeeded) against the same training run in-process.

For the digits MLP and the digits CNN (issue 4's "<= 5 s for 20 epochs"), on the embedded
defaults (SQLite registry and broker) and on PostgreSQL + Redis: the median job wall time,
its queue wait (created -> started), and the ratio to the in-process train + export + parity
of the same spec measured in this run.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.data.builtins import load_builtin  # noqa: E402
from services.spec import JobSpec  # noqa: E402
from services.training.pipeline import ParityCheck, train_and_export  # noqa: E402
from tests.conftest import REDIS_URL, free_port, migrate, postgres_database  # noqa: E402
from tests.e2e.helpers import api_command, kiln_env, mint_key, spawn, stop, wait_for_job, wait_until_ready  # noqa: E402

RUNS = 3
EXAMPLES = ("digits_mlp", "cnn_digits")


def body(example: str) -> dict:
    return json.loads((ROOT / "examples" / f"{example}.json").read_text())


def in_process_seconds(example: str) -> float:
    spec = JobSpec.model_validate(body(example))
    data = load_builtin(spec.data.dataset)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(RUNS + 1):
            started = time.perf_counter()
            train_and_export(spec, data, device=torch.device("cpu"), onnx_path=Path(tmp) / "m.onnx",
                             parity=ParityCheck(256, 1e-4, 1e-4), on_epoch_end=lambda r: None)  # fmt: skip
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:])  # the first run pays for torch's start-up, as a warm worker does not


def through_kiln(database_url: str, **env: str) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        port, url = free_port(), ""
        environment = kiln_env(data_dir=tmp, database_url=database_url, **env)
        migrate(database_url)
        headers = mint_key(environment)
        logs = [Path(tmp) / "api.log", Path(tmp) / "worker.log"]
        procs = [spawn(api_command(port), environment, logs[0]), spawn([sys.executable, "-m", "worker"], environment, logs[1])]
        url = f"http://127.0.0.1:{port}"
        results = {}
        try:
            wait_until_ready(url, procs, logs)
            with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
                for example in EXAMPLES:
                    walls, waits = [], []
                    for _ in range(RUNS):
                        started = time.perf_counter()
                        job = wait_for_job(client, client.post("/v1/jobs", json=body(example)).headers["location"], timeout=120)
                        walls.append(time.perf_counter() - started)
                        assert job["state"] == "succeeded", job["error"]
                        created, began = (datetime.fromisoformat(job[k]) for k in ("created_at", "started_at"))
                        waits.append((began - created).total_seconds())
                    results[example] = (statistics.median(walls), statistics.median(waits))
        finally:
            for proc in procs:
                stop(proc)
    return results


def main() -> None:
    torch.set_num_threads(2)
    baselines = {example: in_process_seconds(example) for example in EXAMPLES}
    for example, seconds in baselines.items():
        print(f"{example}: in-process train + export + parity (baseline) {seconds:.2f} s")
    with tempfile.TemporaryDirectory() as tmp, postgres_database("kiln_bench") as pg_url:
        configs = {
            "embedded (SQLite + SQLite broker)": through_kiln(f"sqlite:///{tmp}/kiln.db"),
            "PostgreSQL + Redis": through_kiln(pg_url, broker_url=REDIS_URL),
        }
    for label, results in configs.items():
        for example, (wall, wait) in results.items():
            print(f"{label}, {example}: job wall {wall:.2f} s (median of {RUNS}), queue wait {wait:.2f} s, "
                  f"wall / in-process = {wall / baselines[example]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
