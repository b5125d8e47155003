"""The SQL unit of work: one session, one transaction; leaving the block without commit rolls back.

It implements the UnitOfWork protocol (protocols.py) that the use cases are typed against.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.registry.changes import announce_commits
from services.registry.db import make_engine, make_session_factory
from services.registry.job_repository import JobRepository
from services.registry.protocols import UnitOfWork
from services.registry.repositories import ApiKeyRepository, DatasetRepository, ModelRepository, WorkerRepository
from services.registry.study_repository import StudyRepository


class SqlUnitOfWork:
    jobs: JobRepository
    models: ModelRepository
    workers: WorkerRepository
    datasets: DatasetRepository
    keys: ApiKeyRepository
    studies: StudyRepository

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> SqlUnitOfWork:
        self._session = self._session_factory()
        self.jobs = JobRepository(self._session)
        self.models = ModelRepository(self._session)
        self.workers = WorkerRepository(self._session)
        self.datasets = DatasetRepository(self._session)
        self.keys = ApiKeyRepository(self._session)
        self.studies = StudyRepository(self._session)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._session.rollback()
        self._session.close()

    def commit(self) -> None:
        self._session.commit()

    def rollback(self) -> None:
        self._session.rollback()


def connect_registry(url: str, *, sqlite_busy_timeout_ms: int = 10_000) -> tuple[Engine, Callable[[], SqlUnitOfWork]]:
    """An engine for `url` and a factory of units of work on it (nothing connects yet)."""
    engine = make_engine(url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms)
    sessions = make_session_factory(engine)
    announce_commits(sessions, url)  # a job's event stream answers at once (services/registry/changes.py)
    return engine, lambda: SqlUnitOfWork(sessions)


def _implements_the_protocol(uow: SqlUnitOfWork) -> UnitOfWork:
    return uow  # mypy checks here that every repository method the use cases call matches the SQL one
