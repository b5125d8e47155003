"""The in-memory tables behind tests/fakes.py: rows as plain dataclasses, and the IntegrityError SQL would raise."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from services.registry.entities import (
    ApiKey,
    DatasetRecord,
    EpochRecord,
    Job,
    JobState,
    ModelVersion,
    Rollout,
)
from services.registry.states import sources
from services.registry.tables import utcnow


def _integrity(what: str) -> IntegrityError:
    return IntegrityError(f"fake registry: {what}", {}, Exception(what))


@dataclass
class JobRow:
    """Every column of the jobs table, as the SQL repository sees it."""

    id: uuid.UUID
    model_name: str
    spec: dict[str, Any]
    queue: str
    created_at: datetime
    state: JobState = JobState.QUEUED
    error: str | None = None
    attempt: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    version: int | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    request_hash: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    dispatched_at: datetime | None = None
    checkpoint_epoch: int | None = None
    checkpoint_attempt: int | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    study_id: uuid.UUID | None = None
    trial_number: int | None = None

    def may_move(self, target: JobState, *, only: JobState | None = None) -> bool:
        """The WHERE clause of a move, from the same table the SQL one is built from."""
        return self.state in sources(target, only=only)

    def silent(self, silent_since: datetime) -> bool:
        """Running, and its worker went quiet (job_repository.JobRepository._silent)."""
        if self.state != JobState.RUNNING:
            return False
        if self.heartbeat_at is None:
            return self.started_at is not None and self.started_at < silent_since
        return self.heartbeat_at < silent_since or (self.lease_expires_at is not None and self.lease_expires_at < utcnow())


_JOB_FIELDS = {f.name for f in fields(Job)} - {"history", "last_epoch"}


@dataclass
class Tables:
    """What the registry holds: committed, or a unit of work's private copy of it."""

    jobs: dict[uuid.UUID, JobRow] = field(default_factory=dict)
    epochs: dict[uuid.UUID, dict[int, EpochRecord]] = field(default_factory=dict)
    images: dict[tuple[uuid.UUID, int], bytes | None] = field(default_factory=dict)  # job_epochs.image, read apart
    models: dict[str, datetime] = field(default_factory=dict)  # name -> created_at
    versions: dict[str, dict[int, ModelVersion]] = field(default_factory=dict)
    aliases: dict[str, dict[str, Rollout]] = field(default_factory=dict)  # a plain alias is a Rollout of one version
    workers: dict[str, tuple[str, int, datetime]] = field(default_factory=dict)  # name -> (queue, gpus, last_seen)
    datasets: dict[uuid.UUID, DatasetRecord] = field(default_factory=dict)
    keys: dict[uuid.UUID, tuple[ApiKey, str]] = field(default_factory=dict)  # id -> (key, secret_sha256)
    studies: dict[uuid.UUID, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # id -> (state, spec): what the fakes read
