"""Repositories: queries over one session. They never commit; the unit of work does."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from services.registry.entities import (
    VERSION_FIELDS,
    ApiKey,
    DatasetRecord,
    EpochRecord,
    Job,
    JobState,
    LostJob,
    ModelSummary,
    ModelVersion,
    NewVersion,
)
from services.registry.tables import ApiKeyRow, DatasetRow, JobEpochRow, JobRow, ModelAliasRow, ModelRow, ModelVersionRow, WorkerRow, utcnow


def _job(row: JobRow, history: list[EpochRecord]) -> Job:
    return Job(
        id=row.id,
        model_name=row.model_name,
        spec=row.spec,
        state=JobState(row.state),
        queue=row.queue,
        error=row.error,
        attempt=row.attempt,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        version=row.version,
        history=history,
        cancel_requested=row.cancel_requested,
        lease_owner=row.lease_owner,
        heartbeat_at=row.heartbeat_at,
        checkpoint_epoch=row.checkpoint_epoch,
        checkpoint_attempt=row.checkpoint_attempt,
    )


def _epoch(row: JobEpochRow) -> EpochRecord:
    return EpochRecord(row.epoch, row.train_loss, row.val_loss, row.metrics, row.duration_s)


class JobRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self, *, job_id: uuid.UUID, model_name: str, spec: dict, queue: str,
        idempotency_key: str | None = None, request_hash: str | None = None,
    ) -> None:  # fmt: skip
        now = utcnow()
        self.session.add(JobRow(
            id=job_id, model_name=model_name, spec=spec, state=JobState.QUEUED, queue=queue, attempt=0, created_at=now, dispatched_at=now,
            cancel_requested=False, idempotency_key=idempotency_key, request_hash=request_hash,
        ))  # fmt: skip
        self.session.flush()  # a duplicate Idempotency-Key fails here, inside the caller's transaction

    def by_idempotency_key(self, key: str) -> tuple[uuid.UUID, str | None] | None:
        """The job created with `key`, and the hash of the body that created it."""
        row = self.session.execute(select(JobRow.id, JobRow.request_hash).where(JobRow.idempotency_key == key)).first()
        return (row[0], row[1]) if row else None

    def request_cancel(self, job_id: uuid.UUID) -> bool:
        """Ask a running job to stop at its next batch; False when it is not running."""
        result = self.session.execute(
            update(JobRow).where(JobRow.id == job_id, JobRow.state == JobState.RUNNING).values(cancel_requested=True)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def cancel_requested(self, job_id: uuid.UUID) -> bool:
        return bool(self.session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def get(self, job_id: uuid.UUID, *, with_history: bool = True) -> Job | None:
        row = self.session.get(JobRow, job_id)
        if row is None:
            return None
        return _job(row, self.history(job_id) if with_history else [])

    def history(self, job_id: uuid.UUID) -> list[EpochRecord]:
        rows = self.session.scalars(select(JobEpochRow).where(JobEpochRow.job_id == job_id).order_by(JobEpochRow.epoch))
        return [_epoch(r) for r in rows]

    def page(self, *, limit: int, offset: int, state: JobState | None = None) -> tuple[list[Job], int]:
        query = select(JobRow)
        if state is not None:
            query = query.where(JobRow.state == state)
        count = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self.session.scalars(query.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset))
        return [_job(r, []) for r in rows], count

    def count_by_state(self) -> dict[str, int]:
        rows = self.session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
        return {state: count for state, count in rows}

    def claim(self, job_id: uuid.UUID, *, owner: str, lease_s: float) -> int | None:
        """queued -> running, once per attempt: the attempt number, or None where a duplicate delivery claims nothing."""
        now = utcnow()
        result = self.session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.state == JobState.QUEUED)
            .values(
                state=JobState.RUNNING,
                attempt=JobRow.attempt + 1,
                started_at=func.coalesce(JobRow.started_at, now),
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                heartbeat_at=now,
            )  # fmt: skip
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return self.session.scalar(select(JobRow.attempt).where(JobRow.id == job_id))

    def heartbeat(self, job_id: uuid.UUID, attempt: int) -> bool:
        """Renew attempt `attempt`'s claim; False when the job was taken back or ended (the attempt must stop)."""
        return self._holding(job_id, attempt, heartbeat_at=utcnow())

    def set_checkpoint(self, job_id: uuid.UUID, attempt: int, epoch: int) -> bool:
        return self._holding(job_id, attempt, checkpoint_epoch=epoch, checkpoint_attempt=attempt)

    def _holding(self, job_id: uuid.UUID, attempt: int, **values: Any) -> bool:
        result = self.session.execute(
            update(JobRow).where(JobRow.id == job_id, JobRow.state == JobState.RUNNING, JobRow.attempt == attempt).values(**values)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def mark_dispatched(self, job_id: uuid.UUID, *, sent_before: datetime) -> bool:
        """Claim the re-sending of a queued job's message (one sweeper wins); False when another did, or it moved on."""
        result = self.session.execute(
            update(JobRow)
            .where(
                JobRow.id == job_id, JobRow.state == JobState.QUEUED, (JobRow.dispatched_at < sent_before) | JobRow.dispatched_at.is_(None)
            )  # fmt: skip
            .values(dispatched_at=utcnow())
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def states(self, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, JobState]:
        rows = self.session.execute(select(JobRow.id, JobRow.state).where(JobRow.id.in_(job_ids)))
        return {row[0]: JobState(row[1]) for row in rows}

    @staticmethod
    def _silent(silent_since: datetime) -> Any:
        """Running, and no heartbeat since `silent_since` or a lease run out (a row with no heartbeat at all
        is one a worker from before leases started: silent once it started long enough ago)."""
        return (JobRow.state == JobState.RUNNING) & (
            (JobRow.heartbeat_at < silent_since)
            | (JobRow.lease_expires_at < utcnow())
            | (JobRow.heartbeat_at.is_(None) & (JobRow.started_at < silent_since))
        )

    def lost_running(self, *, silent_since: datetime) -> list[LostJob]:
        """Running jobs whose worker went silent."""
        rows = self.session.execute(
            select(JobRow.id, JobRow.attempt, JobRow.queue, JobRow.cancel_requested).where(self._silent(silent_since))
        )
        return [LostJob(*row) for row in rows]

    def take_back(self, job_id: uuid.UUID, attempt: int, *, silent_since: datetime, **values: Any) -> bool:
        """Change attempt `attempt` of a job (requeue or end it) only if it is still silent: a heartbeat that
        came in since it was listed wins."""
        result = self.session.execute(
            update(JobRow).where(JobRow.id == job_id, JobRow.attempt == attempt, self._silent(silent_since)).values(**values)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def requeue(self, job_id: uuid.UUID, attempt: int, *, silent_since: datetime) -> bool:
        """running (attempt `attempt`, still silent) -> queued, for another attempt."""
        return self.take_back(job_id, attempt, silent_since=silent_since, state=JobState.QUEUED, lease_owner=None,
                              lease_expires_at=None, heartbeat_at=None, dispatched_at=utcnow())  # fmt: skip

    def end_lost(self, job_id: uuid.UUID, attempt: int, *, silent_since: datetime, state: JobState, error: str) -> bool:
        return self.take_back(job_id, attempt, silent_since=silent_since, state=state, error=error, finished_at=utcnow(),
                              lease_owner=None, lease_expires_at=None)  # fmt: skip

    def unsent_queued(self, *, sent_before: datetime) -> list[tuple[uuid.UUID, str]]:
        """(id, queue) of queued jobs whose message went out before `sent_before`, oldest first."""
        rows = self.session.execute(
            select(JobRow.id, JobRow.queue)
            .where(JobRow.state == JobState.QUEUED, (JobRow.dispatched_at < sent_before) | JobRow.dispatched_at.is_(None))
            .order_by(JobRow.created_at)
        )
        return [(row[0], row[1]) for row in rows]

    def add_epoch(self, job_id: uuid.UUID, record: EpochRecord) -> None:
        self.session.add(
            JobEpochRow(
                job_id=job_id,
                epoch=record.epoch,
                train_loss=record.train_loss,
                val_loss=record.val_loss,
                metrics=record.metrics,
                duration_s=record.duration_s,
                created_at=utcnow(),
            )
        )

    def finish(
        self,
        job_id: uuid.UUID,
        *,
        state: JobState,
        error: str | None = None,
        version: int | None = None,
        from_state: JobState = JobState.RUNNING,
        attempt: int | None = None,
    ) -> bool:
        """Move a job from `from_state` (and `attempt`, when given) to its final state; any other job is left as it is."""
        query = update(JobRow).where(JobRow.id == job_id, JobRow.state == from_state)
        if attempt is not None:
            query = query.where(JobRow.attempt == attempt)
        result = self.session.execute(
            query.values(state=state, error=error, version=version, finished_at=utcnow(), lease_owner=None, lease_expires_at=None)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def delete_epochs_after(self, job_id: uuid.UUID, epoch: int) -> None:
        self.session.execute(delete(JobEpochRow).where(JobEpochRow.job_id == job_id, JobEpochRow.epoch > epoch))


def _version(row: ModelVersionRow, model_name: str) -> ModelVersion:
    supplied = {name: getattr(row, name) for name in VERSION_FIELDS}
    return ModelVersion(model_name=model_name, version=row.version, created_at=row.created_at, **supplied)


class ModelRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _model_id(self, name: str) -> int | None:
        return self.session.scalar(select(ModelRow.id).where(ModelRow.name == name))

    def exists(self, name: str) -> bool:
        return self._model_id(name) is not None

    def summaries(self) -> list[ModelSummary]:
        stats = (
            select(ModelVersionRow.model_id, func.max(ModelVersionRow.version).label("latest"), func.count().label("n"))
            .group_by(ModelVersionRow.model_id)
            .subquery()
        )
        rows = self.session.execute(
            select(ModelRow.name, ModelRow.created_at, stats.c.latest, stats.c.n)
            .outerjoin(stats, stats.c.model_id == ModelRow.id)
            .order_by(ModelRow.name)
        )
        return [ModelSummary(name, created, latest, n or 0) for name, created, latest, n in rows]

    def versions(self, name: str) -> list[ModelVersion]:
        rows = self.session.scalars(select(ModelVersionRow).join(ModelRow).where(ModelRow.name == name).order_by(ModelVersionRow.version))
        return [_version(r, name) for r in rows]

    def get_version(self, name: str, version: int) -> ModelVersion | None:
        row = self.session.scalar(select(ModelVersionRow).join(ModelRow).where(ModelRow.name == name, ModelVersionRow.version == version))
        return _version(row, name) if row else None

    def version_for_job(self, job_id: uuid.UUID) -> ModelVersion | None:
        row = self.session.execute(select(ModelVersionRow, ModelRow.name).join(ModelRow).where(ModelVersionRow.job_id == job_id)).first()
        return _version(row[0], row[1]) if row else None

    def add_version(self, new: NewVersion) -> int:
        """Insert `new` as max + 1; the unique constraint turns a concurrent duplicate into IntegrityError."""
        model_id = self._model_id(new.model_name)
        if model_id is None:
            model = ModelRow(name=new.model_name, created_at=utcnow())
            self.session.add(model)
            self.session.flush()
            model_id = model.id
        latest = self.session.scalar(select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == model_id))
        version = (latest or 0) + 1
        supplied = {name: getattr(new, name) for name in VERSION_FIELDS}
        self.session.add(ModelVersionRow(model_id=model_id, version=version, created_at=utcnow(), **supplied))
        self.session.flush()
        return version

    def latest_version(self, name: str) -> int | None:
        return self.session.scalar(select(func.max(ModelVersionRow.version)).join(ModelRow).where(ModelRow.name == name))

    def alias_version(self, name: str, alias: str) -> int | None:
        return self.session.scalar(select(ModelAliasRow.version).join(ModelRow).where(ModelRow.name == name, ModelAliasRow.alias == alias))

    def aliases(self, name: str) -> dict[str, int]:
        rows = self.session.execute(select(ModelAliasRow.alias, ModelAliasRow.version).join(ModelRow).where(ModelRow.name == name))
        return {alias: version for alias, version in rows}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        model_id = self._model_id(name)
        row = self.session.get(ModelAliasRow, (model_id, alias))
        if row is None:
            self.session.add(ModelAliasRow(model_id=model_id, alias=alias, version=version, updated_at=utcnow()))
        else:
            row.version, row.updated_at = version, utcnow()
        self.session.flush()

    def delete_alias(self, name: str, alias: str) -> bool:
        model_id = self._model_id(name)
        result = self.session.execute(delete(ModelAliasRow).where(ModelAliasRow.model_id == model_id, ModelAliasRow.alias == alias))
        return result.rowcount == 1  # type: ignore[attr-defined]

    def set_serving(self, name: str, version: int, serving: dict[str, Any]) -> None:
        model_id = self._model_id(name)
        self.session.execute(
            update(ModelVersionRow).where(ModelVersionRow.model_id == model_id, ModelVersionRow.version == version).values(serving=serving)
        )

    def artifact_in_use(self, sha256: str) -> bool:
        return self.session.scalar(select(func.count()).where(ModelVersionRow.artifact_sha256 == sha256)) != 0


class WorkerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def heartbeat(self, *, name: str, queue: str, gpus: int) -> None:
        row = self.session.get(WorkerRow, name)
        if row is None:
            self.session.add(WorkerRow(name=name, queue=queue, gpus=gpus, last_seen=utcnow()))
        else:
            row.queue, row.gpus, row.last_seen = queue, gpus, utcnow()

    def remove(self, name: str) -> None:
        row = self.session.get(WorkerRow, name)
        if row is not None:
            self.session.delete(row)

    def any_alive(self, *, queue: str, since: datetime) -> bool:
        return self.session.scalar(select(func.count()).where(WorkerRow.queue == queue, WorkerRow.last_seen >= since)) != 0


def _dataset(row: DatasetRow) -> DatasetRecord:
    return DatasetRecord(
        id=row.id, name=row.name, format=row.format, fingerprint=row.fingerprint, sha256=row.sha256, size=row.size,
        n_samples=row.n_samples, feature_shape=tuple(row.feature_shape["shape"]), dtype=row.feature_shape["dtype"],
        target=row.target, options=row.options, created_at=row.created_at,
    )  # fmt: skip


class DatasetRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, record: DatasetRecord) -> None:
        self.session.add(DatasetRow(
            id=record.id, name=record.name, format=record.format, fingerprint=record.fingerprint, sha256=record.sha256,
            size=record.size, n_samples=record.n_samples, feature_shape={"shape": list(record.feature_shape), "dtype": record.dtype},
            target=record.target, options=record.options, created_at=record.created_at,
        ))  # fmt: skip
        self.session.flush()

    def get(self, dataset_id: uuid.UUID) -> DatasetRecord | None:
        row = self.session.get(DatasetRow, dataset_id)
        return _dataset(row) if row else None

    def by_fingerprint(self, fingerprint: str) -> DatasetRecord | None:
        row = self.session.scalar(select(DatasetRow).where(DatasetRow.fingerprint == fingerprint))
        return _dataset(row) if row else None

    def all(self) -> list[DatasetRecord]:
        return [_dataset(r) for r in self.session.scalars(select(DatasetRow).order_by(DatasetRow.created_at, DatasetRow.id))]

    def versions_using(self, dataset_id: uuid.UUID) -> int:
        return self.session.scalar(select(func.count()).where(ModelVersionRow.dataset_id == dataset_id)) or 0

    def delete(self, dataset_id: uuid.UUID) -> None:
        self.session.execute(delete(DatasetRow).where(DatasetRow.id == dataset_id))


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(row.id, row.name, row.prefix, tuple(row.scopes), row.created_at, row.revoked_at)


class ApiKeyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, *, key_id: uuid.UUID, name: str, prefix: str, secret_sha256: str, scopes: list[str]) -> ApiKey:
        row = ApiKeyRow(id=key_id, name=name, prefix=prefix, secret_sha256=secret_sha256, scopes=scopes, created_at=utcnow())
        self.session.add(row)
        self.session.flush()
        return _key(row)

    def active_by_hash(self, secret_sha256: str) -> ApiKey | None:
        row = self.session.scalar(select(ApiKeyRow).where(ApiKeyRow.secret_sha256 == secret_sha256, ApiKeyRow.revoked_at.is_(None)))
        return _key(row) if row else None

    def all(self) -> list[ApiKey]:
        return [_key(r) for r in self.session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]

    def revoke(self, key_id: uuid.UUID) -> bool:
        result = self.session.execute(
            update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
        return result.rowcount == 1  # type: ignore[attr-defined]
