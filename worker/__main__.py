"""`python -m worker`: start a Celery worker on the `gpu` queue (one process per GPU) or the `cpu` queue."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading

from celery import signals

from services.config import Settings
from services.logs import configure_logging
from services.registry.unit_of_work import connect_registry
from services.storage import open_storage
from services.usecases.studies import StudyTerms
from services.usecases.sweeper import SweepPolicy, sweep
from services.usecases.workers import record_worker_heartbeat, remove_worker
from worker.app import CeleryDispatcher, create_celery, queue_lengths
from worker.context import WorkerPlan, configure, worker_context

log = logging.getLogger("kiln.worker")


def count_gpus() -> int:
    """GPUs torch can use, asked in a child process so CUDA is never initialised before the fork."""
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(result.stdout.strip() or 0)


def plan_worker(settings: Settings) -> WorkerPlan:
    gpus = count_gpus()
    queue, concurrency = ("gpu", gpus) if gpus else ("cpu", settings.worker_concurrency)
    return WorkerPlan(settings, queue, concurrency, name=f"{queue}@{socket.gethostname()}:{os.getpid()}")


class Heartbeat:
    """Keeps this worker's row fresh in SQL while it runs, and removes it on a clean shutdown.

    The row first appears when a pool child is ready to train (announce_ready, after its torch warm-up), not when Celery
    says the worker is ready: that comes first, and a job sent then would wait out the warm-up. This thread's first beat,
    an interval later, announces the worker anyway.
    """

    def __init__(self, plan: WorkerPlan) -> None:
        settings = plan.settings
        _, self.uow_factory = connect_registry(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        self.name = plan.name
        self.plan = plan
        self.stop = threading.Event()

    def beat(self) -> None:
        record_worker_heartbeat(uow_factory=self.uow_factory, name=self.name, queue=self.plan.queue, gpus=self.plan.gpus)

    def run(self) -> None:
        while not self.stop.wait(self.plan.settings.worker_heartbeat_s):
            try:
                self.beat()
            except Exception:
                log.exception("worker heartbeat failed; retrying")

    def start(self, **_: object) -> None:
        threading.Thread(target=self.run, name="kiln-heartbeat", daemon=True).start()

    def shutdown(self, **_: object) -> None:
        self.stop.set()
        remove_worker(uow_factory=self.uow_factory, name=self.name)


def announce_ready(plan: WorkerPlan) -> None:
    """In a pool child, once its context is built and torch warmed up: the worker's row, so /readyz and the API's
    "a worker is there" checks see a worker that can train now."""
    ctx = worker_context()
    try:
        record_worker_heartbeat(uow_factory=ctx.uow_factory, name=plan.name, queue=plan.queue, gpus=plan.gpus)
    except Exception:  # the database is away: the main process's heartbeat announces it later
        log.warning("worker not announced by its pool child; the heartbeat will", exc_info=True)
    log.info("kiln worker: process %d ready to train on %s", os.getpid(), ctx.device)


class Sweeper:
    """Runs services.usecases.sweeper every `sweep_interval_s` in the worker's main process."""

    def __init__(self, plan: WorkerPlan) -> None:
        settings = plan.settings
        _, self.uow_factory = connect_registry(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        self.celery = create_celery(settings)
        self.settings = settings
        self.policy = SweepPolicy(max_attempts=settings.max_attempts, stale_after_s=settings.job_stale_after_s,
                                  redispatch_after_s=settings.redispatch_after_s, checkpoints=settings.checkpoints,
                                  copies=open_storage(settings).checkpoints)  # fmt: skip
        self.stop = threading.Event()

    def run(self) -> None:
        from services.metrics import WorkerMetrics  # after prepare_metrics, in the thread: the main process counts too

        dispatcher = CeleryDispatcher(self.celery)
        settings, metrics = self.settings, WorkerMetrics()
        studies = StudyTerms(uow_factory=self.uow_factory, dispatcher=dispatcher, stale_after_s=settings.worker_stale_after_s,
                             budget=settings.budget(),
                             count_trial=lambda outcome: metrics.study_trials.labels(outcome).inc())  # fmt: skip
        while not self.stop.wait(self.settings.sweep_interval_s):
            try:
                sweep(uow_factory=self.uow_factory, dispatcher=dispatcher, waiting=lambda: queue_lengths(self.celery), policy=self.policy,
                      studies=studies)  # fmt: skip
            except Exception:  # the database is away: the next pass tries again
                log.warning("sweep failed; retrying", exc_info=True)

    def start(self, **_: object) -> None:
        threading.Thread(target=self.run, name="kiln-sweeper", daemon=True).start()

    def shutdown(self, **_: object) -> None:
        self.stop.set()


def prepare_metrics(settings: Settings) -> None:
    """Multiprocess metrics: pool children write files here, the main process serves their sum."""
    metrics_dir = settings.data_dir / "metrics" / f"worker-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # before prometheus_client is first imported
    if settings.worker_metrics_port:
        from services.metrics import serve_worker_metrics

        try:
            serve_worker_metrics(host=settings.host, port=settings.worker_metrics_port)
        except OSError as err:  # training matters more than its metrics: say so loudly, and go on
            log.error("worker metrics not served on port %d: %s (set KILN_WORKER_METRICS_PORT)", settings.worker_metrics_port, err)


def main() -> None:
    settings = Settings()
    configure_logging(level=settings.log_level, json_lines=settings.log_format == "json")
    settings.ensure_dirs()
    prepare_metrics(settings)
    plan = plan_worker(settings)
    configure(plan)
    app = create_celery(settings)
    heartbeat, sweeper = Heartbeat(plan), Sweeper(plan)
    signals.worker_ready.connect(heartbeat.start, weak=False)
    signals.worker_ready.connect(sweeper.start, weak=False)
    signals.worker_shutdown.connect(sweeper.shutdown, weak=False)
    # Each pool child builds its context (database engine, device, torch warm-up) as it starts, then announces the worker.
    signals.worker_process_init.connect(lambda **_: announce_ready(plan), weak=False)
    signals.worker_shutdown.connect(heartbeat.shutdown, weak=False)
    log.info("kiln worker: queue %s, %d process(es)", plan.queue, plan.concurrency)
    app.worker_main(
        [
            "worker",
            "--loglevel",
            settings.log_level.upper(),
            "--pool",
            "prefork",
            "--concurrency",
            str(plan.concurrency),
            "--queues",
            plan.settings.queue_prefix + plan.queue,
            "--hostname",
            heartbeat.name,
            # Gossip, mingle and worker heartbeats use broadcast messages; Kiln's state lives in SQL.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    main()
