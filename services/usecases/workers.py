"""Workers announce themselves in SQL, so `device: auto` knows whether a GPU worker is listening."""

from __future__ import annotations

from services.usecases.jobs import UowFactory


def record_worker_heartbeat(*, uow_factory: UowFactory, name: str, queue: str, gpus: int) -> None:
    with uow_factory() as uow:
        uow.workers.heartbeat(name=name, queue=queue, gpus=gpus)
        uow.commit()


def remove_worker(*, uow_factory: UowFactory, name: str) -> None:
    with uow_factory() as uow:
        uow.workers.remove(name)
        uow.commit()
