"""SQLAlchemy tables. Alembic migrations are the schema authority; these mirror them for queries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false as sa_false


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores none, so it is restored on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), index=True)
    queue: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    version: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # Idempotency-Key of the request that created the job, and a hash of its body.
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True, index=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Who runs the job (attempt `attempt`), until when at the latest, and when it last said it was alive.
    lease_owner: Mapped[str | None] = mapped_column(String(160))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]  # when its message was last sent to the broker
    checkpoint_epoch: Mapped[int | None] = mapped_column(Integer)  # the epoch its last checkpoint holds
    checkpoint_attempt: Mapped[int | None] = mapped_column(Integer)  # the attempt that wrote it (one file per attempt)
    warnings: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # [{"epoch", "message"}]: a GAN's stability, divergence
    study_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("studies.id", name="fk_jobs_study_id"), index=True)
    trial_number: Mapped[int | None] = mapped_column(Integer)  # the study's trial this job runs


class JobEpochRow(Base):
    __tablename__ = "job_epochs"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]]
    duration_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    image: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)  # a GAN's fixed latent batch as a PNG grid


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime]


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True)
    artifact_sha256: Mapped[str] = mapped_column(String(64), index=True)
    artifact_size: Mapped[int] = mapped_column(BigInteger)  # bytes: 64-bit, an ONNX file may pass 2 GiB
    signature: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    spec: Mapped[dict[str, Any]]
    hyperparameters: Mapped[dict[str, Any]]
    dataset: Mapped[dict[str, Any]]
    # An uploaded dataset the version learnt from (None for built-ins); it cannot be deleted while referenced.
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("datasets.id", name="fk_model_versions_dataset_id"), index=True)
    labels: Mapped[list[str] | None] = mapped_column(JSON)  # class names, in output order
    preprocessing: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # e.g. the vocabulary of a text model
    serving: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # per-version batching overrides
    task: Mapped[str | None] = mapped_column(String(32))  # classifier, regressor, autoencoder; None for uploads
    anomaly: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # an autoencoder's error percentiles and threshold
    generation: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a GAN generator's latent_dim, classes, sample shape
    weights_sha256: Mapped[str | None] = mapped_column(String(64), index=True)  # the state dict, safetensors, in the store
    weights_size: Mapped[int | None] = mapped_column(BigInteger)
    parent: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the base version a child copied layers from
    created_at: Mapped[datetime]


class ModelAliasRow(Base):
    """A movable name for one version of a model (MLflow's aliases): `production`, `staging` ..."""

    __tablename__ = "model_aliases"
    __table_args__ = (
        ForeignKeyConstraint(["model_id", "version"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_model_aliases_version"),
        ForeignKeyConstraint(["model_id", "mirror"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_model_aliases_mirror"),
    )  # fmt: skip

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)  # a split alias: the version with the largest weight
    mirror: Mapped[int | None] = mapped_column(Integer)  # a version that gets a copy of each request, answering no one
    updated_at: Mapped[datetime]


class ModelAliasWeightRow(Base):
    """One version of a split alias and its relative weight; a plain alias has none (its one version takes everything)."""

    __tablename__ = "model_alias_weights"
    __table_args__ = (
        ForeignKeyConstraint(["model_id", "alias"], ["model_aliases.model_id", "model_aliases.alias"],
                             name="fk_model_alias_weights_alias", ondelete="CASCADE"),
        ForeignKeyConstraint(["model_id", "version"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_model_alias_weights_version"),
    )  # fmt: skip

    model_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    weight: Mapped[int] = mapped_column(Integer)


class DatasetRow(Base):
    """An uploaded dataset; its arrays live in the dataset store under its id."""

    __tablename__ = "datasets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the bytes and the read options
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)  # bytes of the upload: 64-bit, uploads may pass 2 GiB
    n_samples: Mapped[int] = mapped_column(Integer)
    feature_shape: Mapped[dict[str, Any]]  # {"shape": [...], "dtype": "float32" | "text" ...}
    target: Mapped[dict[str, Any]]  # {"kind": "classification", "class_names": [...]} or {"kind": "regression", ...}
    options: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class WorkerRow(Base):
    """Live workers, so `device: auto` can route to a GPU queue only when a GPU worker is listening."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    queue: Mapped[str] = mapped_column(String(16))
    gpus: Mapped[int] = mapped_column(Integer)
    last_seen: Mapped[datetime] = mapped_column(index=True)


class ApiKeyRow(Base):
    """An API key: only the SHA-256 of its secret is kept (the secret is random, so a slow hash adds nothing)."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to tell keys apart in lists
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class StudyRow(Base):
    """A hyperparameter study: its body, where it stands, and its best trial once it ends."""

    __tablename__ = "studies"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    model_name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    best_trial: Mapped[int | None] = mapped_column(Integer)
    best_version: Mapped[int | None] = mapped_column(Integer)
    importances: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # bumped first by the coordinator: its lock


class StudyTrialRow(Base):
    """One trial: the values it was given and the job that runs them; `outcome` is written once, when it ends."""

    __tablename__ = "study_trials"
    __table_args__ = (UniqueConstraint("job_id", name="uq_study_trials_job_id"),)

    study_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("studies.id", name="fk_study_trials_study_id", ondelete="CASCADE"),
                                                primary_key=True)  # fmt: skip
    number: Mapped[int] = mapped_column(Integer, primary_key=True)  # unique per study: no trial is started twice
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("jobs.id", name="fk_study_trials_job_id"))
    params: Mapped[dict[str, Any]]
    system_attrs: Mapped[dict[str, Any]]  # what Optuna's sampler and pruner wrote on the trial
    outcome: Mapped[str | None] = mapped_column(String(16))  # complete, pruned, failed, cancelled; None while it runs
    value: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)  # a sampled job that did not validate (it has no job)
    created_at: Mapped[datetime]
