"""Hyperparameter studies on `digits`, through Kiln's own coordinator, sampler and pruner.

1. TPE against random search: the same space (learning rate, width, dropout, batch size) and the same budget of
   trials, the best val_loss after N trials, averaged over seeds.
2. Pruning: the same random study (its seeded sampler picks the same values whatever the history) with the median
   pruner and without; the wall time of the two as a ratio, and the best value each found.
3. One worker process against two: a study with parallelism 2 on a real API and worker (PostgreSQL and Redis),
   POST to the study's end, as a ratio.

Parts 1 and 2 run the coordinator and run_job in this process on a SQLite registry, one trial at a time, exactly as
a worker would run them (the broker stood in for by a list): the figures are the search's, not the transport's.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.data.store import DatasetStore  # noqa: E402
from services.registry.artifacts import LocalArtifactStore  # noqa: E402
from services.registry.unit_of_work import connect_registry  # noqa: E402
from services.spec import Budget  # noqa: E402
from services.training.pipeline import ParityCheck  # noqa: E402
from services.tuning.spec import StudySpec  # noqa: E402
from services.usecases.studies import StudyTerms, advance_after_job, get_study, submit_study  # noqa: E402
from services.usecases.training import WorkerContext, run_job  # noqa: E402
from services.usecases.trials import trial_state  # noqa: E402
from tests.conftest import REDIS_URL, migrate, postgres_database  # noqa: E402
from tests.e2e.helpers import kiln_env, mint_key, spawn, spawn_api, stop, wait_for_job, wait_until_ready  # noqa: E402

TRIALS, SEEDS, CHECKPOINTS = 16, (0, 1, 2), (4, 8, 12, 16)
JOB = json.loads((ROOT / "examples" / "digits_mlp.json").read_text()) | {"model_name": "bench-study"}
JOB["training"] = JOB["training"] | {"epochs": 6}
SPACE = {
    "training.optimizer.learning_rate": {"type": "float", "low": 1e-5, "high": 0.3, "log": True},
    "model.layers[0].units": {"type": "int", "low": 4, "high": 256, "log": True},
    "model.layers[1].rate": {"type": "float", "low": 0.0, "high": 0.6},
    "training.batch_size": {"type": "categorical", "choices": [16, 32, 64, 128]},
}


def study(**fields: Any) -> dict[str, Any]:
    return {"study_name": "bench", "job": copy.deepcopy(JOB), "search_space": SPACE, "objective": {"metric": "val_loss"},
            "max_trials": TRIALS, "parallelism": 1} | fields  # fmt: skip


class Queue:
    """The broker, stood in for: trial jobs in the order they were sent."""

    def __init__(self) -> None:
        self.jobs: deque[uuid.UUID] = deque()

    def send(self, job_id: uuid.UUID, *, queue: str) -> None:
        self.jobs.append(job_id)


def run_in_process(body: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """Run a study to its end in this process: its trials (state, value, epochs) in order, and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/kiln.db"
        migrate(url)
        engine, uow_factory = connect_registry(url)
        budget = Budget(max_parameters=100_000_000, max_training_memory_mb=4096)
        ctx = WorkerContext(uow_factory=uow_factory, store=LocalArtifactStore(Path(tmp) / "artifacts"), device=torch.device("cpu"),
                            parity=ParityCheck(rows=64, atol=1e-4, rtol=1e-3), datasets=DatasetStore(Path(tmp) / "datasets"),
                            max_in_memory_bytes=2**30, checkpoints=Path(tmp) / "checkpoints", budget=budget)  # fmt: skip
        queue = Queue()
        terms = StudyTerms(uow_factory=uow_factory, dispatcher=queue, budget=budget, stale_after_s=60.0)
        started = time.perf_counter()
        made = submit_study(StudySpec.model_validate(body), terms)
        while queue.jobs:
            job_id = queue.jobs.popleft()
            run_job(job_id, ctx)
            advance_after_job(job_id, terms)
        wall = time.perf_counter() - started
        done = get_study(made.id, uow_factory=uow_factory)
        engine.dispose()
    assert done.state.value == "succeeded", done.error
    return [{"state": trial_state(t), "value": t.value, "epochs": len(t.epochs)} for t in done.trials], wall


def best_after(trials: list[dict[str, Any]], n: int) -> float:
    return min(t["value"] for t in trials[:n] if t["value"] is not None)


def samplers() -> None:
    print(f"1. TPE against random search: best val_loss after N of {TRIALS} trials, mean over seeds {list(SEEDS)} (lower is better)")
    curves: dict[str, list[list[float]]] = {"random": [], "tpe": []}
    for name in curves:
        for seed in SEEDS:
            sampler = {"type": name, "n_startup_trials": 5} if name == "tpe" else name
            trials, _ = run_in_process(study(sampler=sampler, seed=seed))
            curves[name].append([best_after(trials, n) for n in CHECKPOINTS])
    print(f"   {'N':>4} {'random':>8} {'tpe':>8} {'tpe/random':>11}")
    for i, n in enumerate(CHECKPOINTS):
        r, t = (statistics.mean(c[i] for c in curves[name]) for name in ("random", "tpe"))
        print(f"   {n:>4} {r:8.4f} {t:8.4f} {t / r:11.3f}")


def pruning() -> None:
    print(f"2. Pruning: the same {TRIALS} random trials with the median pruner and without")
    plain, plain_s = run_in_process(study(sampler="random", job=JOB | {"training": JOB["training"] | {"epochs": 12}}))
    pruned, pruned_s = run_in_process(study(sampler="random", pruner={"type": "median", "n_startup_trials": 4, "n_warmup_steps": 4},
                                            job=JOB | {"training": JOB["training"] | {"epochs": 12}}))  # fmt: skip
    stopped = sum(1 for t in pruned if t["state"] == "pruned")
    epochs = (sum(t["epochs"] for t in plain), sum(t["epochs"] for t in pruned))
    print(f"   without: {plain_s:6.1f} s, {epochs[0]} epochs, best val_loss {best_after(plain, TRIALS):.4f}")
    print(f"   median:  {pruned_s:6.1f} s, {epochs[1]} epochs, best val_loss {best_after(pruned, TRIALS):.4f} ({stopped} trials pruned)")
    print(f"   wall time pruned/without: {pruned_s / plain_s:.3f}; epochs trained {epochs[1] / epochs[0]:.3f}")


def processes() -> None:
    print("3. One worker process against two: a random study of 8 trials, parallelism 2, POST -> end, PostgreSQL + Redis")
    walls = {}
    for concurrency in (1, 2):
        with tempfile.TemporaryDirectory() as tmp, postgres_database("kiln_bench_studies") as database_url:
            migrate(database_url)
            env = kiln_env(data_dir=tmp, database_url=database_url, broker_url=REDIS_URL, worker_concurrency=str(concurrency))
            headers = mint_key(env)
            logs = [Path(tmp) / "api.log", Path(tmp) / "worker.log"]
            api, port = spawn_api(env, logs[0])
            worker = spawn([sys.executable, "-m", "worker"], env, logs[1])
            try:
                url = f"http://127.0.0.1:{port}"
                wait_until_ready(url, [api, worker], logs)
                with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
                    started = time.perf_counter()
                    location = client.post("/v1/studies", json=study(sampler="random", max_trials=8, parallelism=2)).headers["location"]
                    done = wait_for_job(client, location, timeout=600)
                    walls[concurrency] = time.perf_counter() - started
                    assert done["state"] == "succeeded", done["error"]
            finally:
                stop(api)
                stop(worker)
    print(f"   1 process: {walls[1]:.1f} s; 2 processes: {walls[2]:.1f} s; 2/1: {walls[2] / walls[1]:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    samplers()
    pruning()
    processes()
