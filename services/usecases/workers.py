"""Workers announce themselves in SQL, so `device: auto` knows whether a GPU worker is listening."""

from __future__ import annotations

from datetime import timedelta

from services.registry.tables import utcnow
from services.usecases.jobs import CPU_QUEUE, GPU_QUEUE, UowFactory


def any_worker_alive(*, uow_factory: UowFactory, stale_after_s: float) -> bool:
    """Whether some worker, CPU or GPU, has a fresh heartbeat."""
    since = utcnow() - timedelta(seconds=stale_after_s)
    with uow_factory() as uow:
        return any(uow.workers.any_alive(queue=q, since=since) for q in (CPU_QUEUE, GPU_QUEUE))


def record_worker_heartbeat(*, uow_factory: UowFactory, name: str, queue: str, gpus: int) -> None:
    with uow_factory() as uow:
        uow.workers.heartbeat(name=name, queue=queue, gpus=gpus)
        uow.commit()


def remove_worker(*, uow_factory: UowFactory, name: str) -> None:
    with uow_factory() as uow:
        uow.workers.remove(name)
        uow.commit()
