"""An in-memory registry behind the UnitOfWork protocol (services/registry/protocols.py), for use-case unit tests.

It keeps the promises the SQL repositories keep, and the two-database tests hold those to them:
- a unit of work works on a copy of what is committed; `commit` publishes the copy, and leaving the
  `with` block (or `rollback`) without it discards every change;
- a job moves only along the transition table (services/registry/states.py), through the same
  conditional checks as the SQL updates (state, attempt, silence);
- a broken unique constraint (Idempotency-Key, a job's one version, a fingerprint, a key's hash) or a
  foreign key (deleting a dataset a version uses) raises sqlalchemy's IntegrityError, as SQL does.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

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
    Rollout,
)
from services.registry.states import ACTIVE, FINAL, InvalidTransition
from services.registry.tables import utcnow
from tests.fake_tables import _JOB_FIELDS, JobRow, Tables, _integrity


class FakeJobs:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    def _job(self, row: JobRow, *, with_history: bool, history_after: int = 0) -> Job:
        history = self.history(row.id, after=history_after) if with_history else []
        return Job(**{name: copy.deepcopy(getattr(row, name)) for name in _JOB_FIELDS}, history=history)

    def add(self, *, job_id: uuid.UUID, model_name: str, spec: dict, queue: str,
            idempotency_key: str | None = None, request_hash: str | None = None,
            trial: tuple[uuid.UUID, int] | None = None) -> None:  # fmt: skip
        if job_id in self.t.jobs:
            raise _integrity(f"jobs.id {job_id}")
        if idempotency_key is not None and any(r.idempotency_key == idempotency_key for r in self.t.jobs.values()):
            raise _integrity(f"jobs.idempotency_key {idempotency_key}")
        now = utcnow()
        self.t.jobs[job_id] = JobRow(job_id, model_name, copy.deepcopy(spec), queue, now, dispatched_at=now,
                                     idempotency_key=idempotency_key, request_hash=request_hash,
                                     study_id=trial[0] if trial else None, trial_number=trial[1] if trial else None)  # fmt: skip

    def by_idempotency_key(self, key: str) -> tuple[uuid.UUID, str | None] | None:
        return next(((r.id, r.request_hash) for r in self.t.jobs.values() if r.idempotency_key == key), None)

    def request_cancel(self, job_id: uuid.UUID) -> bool:
        row = self.t.jobs.get(job_id)
        if row is None or not row.may_move(JobState.CANCELLED, only=JobState.RUNNING):
            return False
        row.cancel_requested = True
        return True

    def cancel_requested(self, job_id: uuid.UUID) -> bool:
        row = self.t.jobs.get(job_id)
        return row is not None and row.cancel_requested

    def get(self, job_id: uuid.UUID, *, with_history: bool = True, history_after: int = 0) -> Job | None:
        row = self.t.jobs.get(job_id)
        return self._job(row, with_history=with_history, history_after=history_after) if row else None

    def history(self, job_id: uuid.UUID, *, after: int = 0) -> list[EpochRecord]:
        return [record for epoch, record in sorted(self.t.epochs.get(job_id, {}).items()) if epoch > after]

    def page(self, *, limit: int, offset: int, state: JobState | None = None) -> tuple[list[Job], int]:
        rows = [r for r in self.t.jobs.values() if state is None or r.state == state]
        rows.sort(key=lambda r: str(r.id))
        rows.sort(key=lambda r: r.created_at, reverse=True)
        listed = [self._job(r, with_history=False) for r in rows[offset : offset + limit]]
        # as the real page: each one's last finished epoch, without its history
        return [dataclasses.replace(j, last_epoch=max(self.t.epochs.get(j.id) or {}, default=0)) for j in listed], len(rows)

    def count_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.t.jobs.values():
            counts[row.state.value] = counts.get(row.state.value, 0) + 1
        return counts

    def claim(self, job_id: uuid.UUID, *, owner: str, lease_s: float) -> int | None:
        row = self.t.jobs.get(job_id)
        if row is None or not row.may_move(JobState.RUNNING):
            return None
        now = utcnow()
        row.state, row.attempt, row.started_at = JobState.RUNNING, row.attempt + 1, row.started_at or now
        row.lease_owner, row.lease_expires_at, row.heartbeat_at = owner, now + timedelta(seconds=lease_s), now
        return row.attempt

    def _holding(self, job_id: uuid.UUID, attempt: int) -> JobRow | None:
        row = self.t.jobs.get(job_id)
        return row if row is not None and row.state == JobState.RUNNING and row.attempt == attempt else None

    def heartbeat(self, job_id: uuid.UUID, attempt: int) -> bool:
        if (row := self._holding(job_id, attempt)) is None:
            return False
        row.heartbeat_at = utcnow()
        return True

    def set_checkpoint(self, job_id: uuid.UUID, attempt: int, epoch: int) -> bool:
        if (row := self._holding(job_id, attempt)) is None:
            return False
        row.checkpoint_epoch, row.checkpoint_attempt = epoch, attempt
        return True

    @staticmethod
    def _unsent(row: JobRow, sent_before: datetime) -> bool:
        return row.state == JobState.QUEUED and (row.dispatched_at is None or row.dispatched_at < sent_before)

    def mark_dispatched(self, job_id: uuid.UUID, *, sent_before: datetime) -> bool:
        row = self.t.jobs.get(job_id)
        if row is None or not self._unsent(row, sent_before):
            return False
        row.dispatched_at = utcnow()
        return True

    def states(self, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, JobState]:
        return {i: self.t.jobs[i].state for i in job_ids if i in self.t.jobs}

    def lost_running(self, *, silent_since: datetime) -> list[LostJob]:
        return [LostJob(r.id, r.attempt, r.queue, r.cancel_requested) for r in self.t.jobs.values() if r.silent(silent_since)]

    def _take_back(self, job_id: uuid.UUID, attempt: int, silent_since: datetime, state: JobState) -> JobRow | None:
        row = self.t.jobs.get(job_id)
        if row is None or row.attempt != attempt or not row.may_move(state, only=JobState.RUNNING) or not row.silent(silent_since):
            return None
        row.state = state
        return row

    def requeue(self, job_id: uuid.UUID, attempt: int, *, silent_since: datetime) -> bool:
        if (row := self._take_back(job_id, attempt, silent_since, JobState.QUEUED)) is None:
            return False
        row.lease_owner = row.lease_expires_at = row.heartbeat_at = None
        row.dispatched_at = utcnow()
        return True

    def end_lost(self, job_id: uuid.UUID, attempt: int, *, silent_since: datetime, state: JobState, error: str) -> bool:
        if (row := self._take_back(job_id, attempt, silent_since, state)) is None:
            return False
        row.error, row.finished_at, row.lease_owner, row.lease_expires_at = error, utcnow(), None, None
        return True

    def unsent_queued(self, *, sent_before: datetime) -> list[tuple[uuid.UUID, str]]:
        rows = sorted((r for r in self.t.jobs.values() if self._unsent(r, sent_before)), key=lambda r: r.created_at)
        return [(r.id, r.queue) for r in rows]

    def any_active_using(self, dataset: str) -> bool:
        return any(r.state in ACTIVE and r.spec.get("data", {}).get("dataset") == dataset for r in self.t.jobs.values())

    def add_epoch(self, job_id: uuid.UUID, record: EpochRecord) -> None:
        if job_id not in self.t.jobs or record.epoch in self.t.epochs.get(job_id, {}):
            raise _integrity(f"job_epochs ({job_id}, {record.epoch})")
        self.t.epochs.setdefault(job_id, {})[record.epoch] = replace(record, image=None, drawn=record.image is not None)
        self.t.images[(job_id, record.epoch)] = record.image

    def finish(self, job_id: uuid.UUID, *, state: JobState, error: str | None = None, version: int | None = None,
               from_state: JobState = JobState.RUNNING, attempt: int | None = None) -> bool:  # fmt: skip
        if state not in FINAL:
            raise InvalidTransition(f"finish ends a job: {state} is not a final state")
        row = self.t.jobs.get(job_id)
        if row is None or not row.may_move(state, only=from_state) or attempt not in (None, row.attempt):
            return False
        row.state, row.error, row.version, row.finished_at = state, error, version, utcnow()
        row.lease_owner = row.lease_expires_at = None
        return True

    def delete_epochs_after(self, job_id: uuid.UUID, epoch: int) -> None:
        kept = {e: r for e, r in self.t.epochs.get(job_id, {}).items() if e <= epoch}
        self.t.epochs[job_id] = kept
        if (row := self.t.jobs.get(job_id)) is not None:
            row.warnings = [w for w in row.warnings if w["epoch"] <= epoch]

    def add_warnings(self, job_id: uuid.UUID, warnings: list[dict[str, Any]]) -> None:
        row = self.t.jobs[job_id]
        row.warnings = [*row.warnings, *copy.deepcopy(warnings)]

    def epoch_image(self, job_id: uuid.UUID, epoch: int) -> bytes | None:
        return self.t.images.get((job_id, epoch)) if epoch in self.t.epochs.get(job_id, {}) else None


class FakeModels:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    def exists(self, name: str) -> bool:
        return name in self.t.models

    def summaries(self) -> list[ModelSummary]:
        found = []
        for name in sorted(self.t.models):
            numbers = list(self.t.versions.get(name, {}))
            found.append(ModelSummary(name, self.t.models[name], max(numbers, default=None), len(numbers)))
        return found

    def versions(self, name: str) -> list[ModelVersion]:
        return [v for _, v in sorted(self.t.versions.get(name, {}).items())]

    def get_version(self, name: str, version: int) -> ModelVersion | None:
        return self.t.versions.get(name, {}).get(version)

    def version_for_job(self, job_id: uuid.UUID) -> ModelVersion | None:
        return next((v for vs in self.t.versions.values() for v in vs.values() if v.job_id == job_id), None)

    def add_version(self, new: NewVersion) -> int:
        if new.job_id is not None and self.version_for_job(new.job_id) is not None:
            raise _integrity(f"model_versions.job_id {new.job_id}")
        if new.dataset_id is not None and new.dataset_id not in self.t.datasets:
            raise _integrity(f"model_versions.dataset_id {new.dataset_id}")
        self.t.models.setdefault(new.model_name, utcnow())
        numbers = self.t.versions.setdefault(new.model_name, {})
        version = max(numbers, default=0) + 1
        supplied = {name: copy.deepcopy(getattr(new, name)) for name in VERSION_FIELDS}
        numbers[version] = ModelVersion(model_name=new.model_name, version=version, created_at=utcnow(), **supplied)
        return version

    def latest_version(self, name: str) -> int | None:
        return max(self.t.versions.get(name, {}), default=None)

    def alias_version(self, name: str, alias: str) -> int | None:
        rollout = self.t.aliases.get(name, {}).get(alias)
        return rollout.primary if rollout else None

    def aliases(self, name: str) -> dict[str, int]:
        return {alias: rollout.primary for alias, rollout in self.t.aliases.get(name, {}).items()}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.set_rollout(name, alias, Rollout.single(version))

    def alias_rollout(self, name: str, alias: str) -> Rollout | None:
        return self.t.aliases.get(name, {}).get(alias)

    def rollouts(self, name: str) -> dict[str, Rollout]:
        return dict(self.t.aliases.get(name, {}))

    def set_rollout(self, name: str, alias: str, rollout: Rollout) -> None:
        named = [version for version, _ in rollout.weights] + ([rollout.mirror] if rollout.mirror is not None else [])
        for version in named:
            if self.get_version(name, version) is None:
                raise _integrity(f"model_aliases -> {name} version {version}")
        self.t.aliases.setdefault(name, {})[alias] = rollout if rollout.split else Rollout.single(rollout.primary, mirror=rollout.mirror)

    def delete_alias(self, name: str, alias: str) -> bool:
        return self.t.aliases.get(name, {}).pop(alias, None) is not None

    def set_serving(self, name: str, version: int, serving: dict[str, Any]) -> None:
        if (found := self.get_version(name, version)) is not None:
            self.t.versions[name][version] = replace(found, serving=dict(serving))

    def artifact_in_use(self, sha256: str) -> bool:
        return any(sha256 in (v.artifact_sha256, v.weights_sha256) for vs in self.t.versions.values() for v in vs.values())


class FakeWorkers:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    def heartbeat(self, *, name: str, queue: str, gpus: int) -> None:
        self.t.workers[name] = (queue, gpus, utcnow())

    def remove(self, name: str) -> None:
        self.t.workers.pop(name, None)

    def any_alive(self, *, queue: str, since: datetime) -> bool:
        return any(q == queue and seen >= since for q, _, seen in self.t.workers.values())


class FakeDatasets:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    def add(self, record: DatasetRecord) -> None:
        if record.id in self.t.datasets or self.by_fingerprint(record.fingerprint) is not None:
            raise _integrity(f"datasets.fingerprint {record.fingerprint}")
        self.t.datasets[record.id] = record

    def get(self, dataset_id: uuid.UUID) -> DatasetRecord | None:
        return self.t.datasets.get(dataset_id)

    def by_fingerprint(self, fingerprint: str) -> DatasetRecord | None:
        return next((d for d in self.t.datasets.values() if d.fingerprint == fingerprint), None)

    def all(self) -> list[DatasetRecord]:
        return sorted(self.t.datasets.values(), key=lambda d: (d.created_at, str(d.id)))

    def versions_using(self, dataset_id: uuid.UUID) -> int:
        return sum(v.dataset_id == dataset_id for vs in self.t.versions.values() for v in vs.values())

    def delete(self, dataset_id: uuid.UUID) -> None:
        if self.versions_using(dataset_id):
            raise _integrity(f"model_versions.dataset_id -> {dataset_id}")
        self.t.datasets.pop(dataset_id, None)


class FakeApiKeys:
    def __init__(self, tables: Tables) -> None:
        self.t = tables

    def add(self, *, key_id: uuid.UUID, name: str, prefix: str, secret_sha256: str, scopes: list[str]) -> ApiKey:
        if any(digest == secret_sha256 for _, digest in self.t.keys.values()):
            raise _integrity("api_keys.secret_sha256")
        key = ApiKey(key_id, name, prefix, tuple(scopes), utcnow())
        self.t.keys[key_id] = (key, secret_sha256)
        return key

    def active_by_hash(self, secret_sha256: str) -> ApiKey | None:
        return next((k for k, digest in self.t.keys.values() if digest == secret_sha256 and k.revoked_at is None), None)

    def all(self) -> list[ApiKey]:
        return sorted((k for k, _ in self.t.keys.values()), key=lambda k: k.created_at)

    def revoke(self, key_id: uuid.UUID) -> bool:
        found = self.t.keys.get(key_id)
        if found is None or found[0].revoked_at is not None:
            return False
        self.t.keys[key_id] = (replace(found[0], revoked_at=utcnow()), found[1])
        return True


class FakeRegistry:
    """The committed tables, shared by every unit of work made from `uow_factory`."""

    def __init__(self) -> None:
        self.committed = Tables()
        self.commits = 0

    def uow_factory(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)


class FakeStudies:
    """The part of the studies repository the use cases with fakes reach (the coordinator's tests run on SQL)."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables

    def add(self, *, study_id: uuid.UUID, name: str, model_name: str, spec: dict[str, Any]) -> None:
        self.t.studies[study_id] = ("running", copy.deepcopy(spec))

    def any_running_using(self, dataset: str) -> bool:
        return any(state == "running" and spec["job"]["data"]["dataset"] == dataset for state, spec in self.t.studies.values())


class FakeUnitOfWork:
    """A transaction on a private copy of the committed tables."""

    jobs: FakeJobs
    models: FakeModels
    workers: FakeWorkers
    datasets: FakeDatasets
    keys: FakeApiKeys
    studies: FakeStudies

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry

    def _begin(self) -> None:
        self._tables = copy.deepcopy(self.registry.committed)
        self.jobs, self.models, self.workers = FakeJobs(self._tables), FakeModels(self._tables), FakeWorkers(self._tables)
        self.datasets, self.keys, self.studies = FakeDatasets(self._tables), FakeApiKeys(self._tables), FakeStudies(self._tables)

    def __enter__(self) -> FakeUnitOfWork:
        self._begin()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.rollback()

    def commit(self) -> None:
        self.registry.committed = copy.deepcopy(self._tables)
        self.registry.commits += 1

    def rollback(self) -> None:
        """Forget every change since the last commit; later calls start from what is committed now."""
        self._begin()
