"""Per-process state of a worker, built on first use inside the pool child (never before the fork)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from billiard.process import current_process

from services.config import Settings
from services.registry.unit_of_work import connect_registry
from services.storage import open_storage
from services.usecases.studies import StudyTerms
from services.usecases.training import LeaseTerms, WorkerContext

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class WorkerPlan:
    """What this worker consumes and how many training processes it runs."""

    settings: Settings
    queue: str  # "gpu" on a host with GPUs, else "cpu"
    concurrency: int  # one process per GPU on a GPU host
    name: str = ""  # the worker's name in the registry's workers table (its main process's)

    @property
    def gpus(self) -> int:
        return self.concurrency if self.queue == "gpu" else 0


_plan: WorkerPlan | None = None
_context: WorkerContext | None = None


def configure(plan: WorkerPlan) -> None:
    """Called by the worker entrypoint before the pool forks."""
    global _plan
    _plan = plan


def worker_context() -> WorkerContext:
    global _context
    if _context is None:
        _context = _build(_plan or WorkerPlan(Settings(), "cpu", 1))
    return _context


def _build(plan: WorkerPlan) -> WorkerContext:
    import torch

    from services.training.device import training_device
    from services.training.warmup import warm_up

    settings = plan.settings
    # Pool children are numbered 0..concurrency-1 (a restarted child takes the free number):
    # on a GPU host, child i trains on GPU i, so each GPU has exactly one training process.
    index = getattr(current_process(), "index", 0)
    device = training_device(index if plan.queue == "gpu" else None)
    torch.set_num_threads(settings.torch_threads or max(1, (os.cpu_count() or 1) // plan.concurrency))
    warm_up(device)  # so the first job does not pay about a second of torch start-up
    return build_context(settings, device)


def build_context(settings: Settings, device: torch.device) -> WorkerContext:
    """What a process that trains on `device` holds: a pool child, or one rank of a multi-process job (worker.ddp)."""
    from services.training.pipeline import ParityCheck
    from worker.launch import TorchrunLauncher

    _, uow_factory = connect_registry(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    from services.metrics import WorkerMetrics
    from worker.app import CeleryDispatcher, create_celery

    metrics = WorkerMetrics()
    storage = open_storage(settings)
    budget = settings.budget()
    dispatcher = CeleryDispatcher(create_celery(settings))
    studies = StudyTerms(uow_factory=uow_factory, dispatcher=dispatcher, budget=budget,
                         stale_after_s=settings.worker_stale_after_s,
                         count_trial=lambda outcome: metrics.study_trials.labels(outcome).inc())  # fmt: skip
    return WorkerContext(
        uow_factory=uow_factory,
        store=storage.artifacts,
        device=device,
        parity=ParityCheck(rows=settings.parity_rows, atol=settings.parity_max_abs_diff, rtol=settings.parity_rtol),
        datasets=storage.datasets,
        max_in_memory_bytes=settings.max_in_memory_dataset_mb * 2**20,
        checkpoints=settings.checkpoints,
        budget=budget,
        metrics=metrics,
        worker_name=f"{socket.gethostname()}:{os.getpid()}",
        lease=LeaseTerms(heartbeat_s=settings.job_heartbeat_s, lease_s=settings.job_lease_s, max_attempts=settings.max_attempts),
        studies=studies,
        checkpoint_copies=storage.checkpoints,
        dispatcher=dispatcher,
        launch_ranks=TorchrunLauncher(),
    )
