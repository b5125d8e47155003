"""Plain records that leave the registry; ORM rows never do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

MAX_VERSION = 2**31 - 1  # version numbers are 32-bit integers in SQL


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based, as Keras prints it
    train_loss: float
    val_loss: float | None
    metrics: dict[str, float]
    duration_s: float
    image: bytes | None = None  # a GAN's fixed latent batch as a PNG grid (written; histories read leave it out)
    drawn: bool = False  # read: whether the epoch has an image (GET /v1/jobs/{id}/epochs/{n}/image)


@dataclass(frozen=True)
class Job:
    id: uuid.UUID
    model_name: str
    spec: dict[str, Any]
    state: JobState
    queue: str
    error: str | None
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    version: int | None
    history: list[EpochRecord] = field(default_factory=list)
    cancel_requested: bool = False
    lease_owner: str | None = None
    heartbeat_at: datetime | None = None
    checkpoint_epoch: int | None = None
    checkpoint_attempt: int | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)  # [{"epoch": n, "message": ...}], in order
    study_id: uuid.UUID | None = None  # the study whose trial `trial_number` this job runs
    trial_number: int | None = None
    last_epoch: int | None = None  # the last finished epoch, where the history was not loaded (a page of jobs)

    @property
    def epoch(self) -> int:
        """The last finished epoch (0 before the first ends)."""
        return self.history[-1].epoch if self.history else self.last_epoch or 0


@dataclass(frozen=True)
class LostJob:
    """A running job whose worker went silent."""

    id: uuid.UUID
    attempt: int
    queue: str
    cancel_requested: bool


@dataclass(frozen=True)
class ModelSummary:
    name: str
    created_at: datetime
    latest_version: int | None
    version_count: int


@dataclass(frozen=True)
class NewVersion:
    """What a caller supplies to register a version; the registry picks the number."""

    model_name: str
    job_id: uuid.UUID | None
    artifact_sha256: str
    artifact_size: int
    signature: dict[str, Any]
    metrics: dict[str, Any]
    spec: dict[str, Any]
    hyperparameters: dict[str, Any]
    dataset: dict[str, Any]
    dataset_id: uuid.UUID | None = None  # an uploaded dataset, which then cannot be deleted
    labels: list[str] | None = None  # class names in output order
    preprocessing: dict[str, Any] | None = None  # what predict does to raw inputs first (e.g. tokenise text)
    serving: dict[str, Any] | None = None  # batching overrides: max_batch_size, max_queue_delay_ms
    task: str | None = None  # what serving does with it: classifier, regressor, autoencoder (None: an upload, or older)
    anomaly: dict[str, Any] | None = None  # an autoencoder's reconstruction-error percentiles and threshold
    generation: dict[str, Any] | None = None  # a GAN generator's latent_dim, classes, labels, sample_shape, value_range
    weights_sha256: str | None = None  # the PyTorch state dict (safetensors) beside the ONNX artifact; None: registered earlier
    weights_size: int | None = None
    parent: dict[str, Any] | None = None  # transfer learning: the base {model, version, layers, frozen, unfrozen}


# Columns of model_versions that a NewVersion supplies as they are.
VERSION_FIELDS = (
    "job_id", "artifact_sha256", "artifact_size", "signature", "metrics", "spec", "hyperparameters", "dataset",
    "dataset_id", "labels", "preprocessing", "serving", "task", "anomaly", "generation", "weights_sha256", "weights_size", "parent",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ModelVersion(NewVersion):
    """A registered version: what was supplied, plus the number and time the registry gave it."""

    version: int
    created_at: datetime


@dataclass(frozen=True)
class Rollout:
    """Where an alias sends predictions: one version, or several by relative weight, and optionally a `mirror` version that
    gets a copy of each request (its answers are recorded, never returned)."""

    weights: tuple[tuple[int, int], ...]  # (version, weight), by version number; weights are relative positive integers
    mirror: int | None = None

    @classmethod
    def single(cls, version: int, *, mirror: int | None = None) -> Rollout:
        return cls(((version, 100),), mirror)

    @property
    def primary(self) -> int:
        """The version taking the most traffic (the lowest number among equals): the one `aliases()` reports."""
        return max(self.weights, key=lambda pair: (pair[1], -pair[0]))[0]

    @property
    def split(self) -> bool:
        return len(self.weights) > 1


@dataclass(frozen=True)
class DatasetRecord:
    """An uploaded dataset as the registry knows it; the arrays live in the dataset store under `id`."""

    id: uuid.UUID
    name: str
    format: str
    fingerprint: str
    sha256: str
    size: int
    n_samples: int
    feature_shape: tuple[int, ...]
    dtype: str  # float32, int64 ... or "text"
    target: dict[str, Any]
    options: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: uuid.UUID
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None


class StudyState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Trial:
    """A study's trial as SQL has it: its values, its job (and that job's state and per-epoch figures)."""

    number: int
    job_id: uuid.UUID | None
    params: dict[str, Any]
    system_attrs: dict[str, Any]
    outcome: str | None  # written once, when the trial ends
    value: float | None
    error: str | None
    created_at: datetime
    job_state: JobState | None = None
    job_error: str | None = None
    version: int | None = None
    epochs: list[dict[str, float]] = field(default_factory=list)  # each finished epoch's metrics, in order


@dataclass(frozen=True)
class Study:
    id: uuid.UUID
    name: str
    model_name: str
    spec: dict[str, Any]
    state: StudyState
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    best_trial: int | None
    best_version: int | None
    importances: dict[str, float] | None
    trials: list[Trial] = field(default_factory=list)
    trial_count: int = 0
