"""Repositories for models, workers, datasets and API keys (jobs: job_repository.py). They never commit; the unit of work does."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from services.registry.entities import (
    VERSION_FIELDS,
    ApiKey,
    DatasetRecord,
    ModelSummary,
    ModelVersion,
    NewVersion,
    Rollout,
)
from services.registry.tables import (
    ApiKeyRow,
    DatasetRow,
    ModelAliasRow,
    ModelAliasWeightRow,
    ModelRow,
    ModelVersionRow,
    WorkerRow,
    utcnow,
)


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
        """Point `alias` at one version, ending any split or mirror it had."""
        self.set_rollout(name, alias, Rollout.single(version))

    def alias_rollout(self, name: str, alias: str) -> Rollout | None:
        return self._rollouts(name, only=alias).get(alias)

    def rollouts(self, name: str) -> dict[str, Rollout]:
        """Every alias of `name` with its versions and weights, and its mirror."""
        return self._rollouts(name, only=None)

    def _rollouts(self, name: str, *, only: str | None) -> dict[str, Rollout]:
        aliases = select(ModelAliasRow.alias, ModelAliasRow.version, ModelAliasRow.mirror).join(ModelRow).where(ModelRow.name == name)
        row = ModelAliasWeightRow
        weights = (
            select(row.alias, row.version, row.weight).join(ModelRow, ModelRow.id == row.model_id)
            .where(ModelRow.name == name).order_by(row.alias, row.version)
        )  # fmt: skip
        if only is not None:
            aliases, weights = aliases.where(ModelAliasRow.alias == only), weights.where(row.alias == only)
        split: dict[str, list[tuple[int, int]]] = {}
        for alias, version, weight in self.session.execute(weights):
            split.setdefault(alias, []).append((version, weight))
        return {alias: Rollout(tuple(split[alias]), mirror) if alias in split else Rollout.single(version, mirror=mirror)
                for alias, version, mirror in self.session.execute(aliases)}  # fmt: skip

    def set_rollout(self, name: str, alias: str, rollout: Rollout) -> None:
        """Create or replace `alias`: its primary version, its weights when it splits traffic, and its mirror."""
        model_id = self._model_id(name)
        row = self.session.get(ModelAliasRow, (model_id, alias))
        if row is None:
            row = ModelAliasRow(model_id=model_id, alias=alias, version=rollout.primary, mirror=rollout.mirror, updated_at=utcnow())
            self.session.add(row)
        else:
            row.version, row.mirror, row.updated_at = rollout.primary, rollout.mirror, utcnow()
            self._delete_weights(model_id, alias)
        self.session.flush()
        if rollout.split:
            self.session.add_all(ModelAliasWeightRow(model_id=model_id, alias=alias, version=version, weight=weight)
                                 for version, weight in rollout.weights)  # fmt: skip
            self.session.flush()

    def delete_alias(self, name: str, alias: str) -> bool:
        model_id = self._model_id(name)
        self._delete_weights(model_id, alias)
        result = self.session.execute(delete(ModelAliasRow).where(ModelAliasRow.model_id == model_id, ModelAliasRow.alias == alias))
        return result.rowcount == 1  # type: ignore[attr-defined]

    def _delete_weights(self, model_id: int | None, alias: str) -> None:
        self.session.execute(
            delete(ModelAliasWeightRow).where(ModelAliasWeightRow.model_id == model_id, ModelAliasWeightRow.alias == alias)
        )

    def set_serving(self, name: str, version: int, serving: dict[str, Any]) -> None:
        model_id = self._model_id(name)
        self.session.execute(
            update(ModelVersionRow).where(ModelVersionRow.model_id == model_id, ModelVersionRow.version == version).values(serving=serving)
        )

    def artifact_in_use(self, sha256: str) -> bool:
        uses = (ModelVersionRow.artifact_sha256 == sha256) | (ModelVersionRow.weights_sha256 == sha256)
        return self.session.scalar(select(func.count()).where(uses)) != 0


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
