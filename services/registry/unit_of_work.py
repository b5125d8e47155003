"""The unit of work: one session, one transaction; leaving the block without commit rolls back."""
from __future__ import annotations

from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from services.registry.repositories import JobRepository, ModelRepository, WorkerRepository


class SqlUnitOfWork:
    jobs: JobRepository
    models: ModelRepository
    workers: WorkerRepository

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> "SqlUnitOfWork":
        self._session = self._session_factory()
        self.jobs = JobRepository(self._session)
        self.models = ModelRepository(self._session)
        self.workers = WorkerRepository(self._session)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._session.rollback()
        self._session.close()

    def commit(self) -> None:
        self._session.commit()

    def rollback(self) -> None:
        self._session.rollback()
