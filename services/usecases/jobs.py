"""Submitting and reading training jobs."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError

from services.data.catalogue import DatasetInfo, resolve_dataset, upload_info
from services.errors import Conflict, InvalidSpec, NotFound, Unavailable
from services.registry.entities import Job, JobState
from services.registry.protocols import UnitOfWork, UowFactory
from services.registry.tables import utcnow
from services.spec import Budget, DataSpec, JobSpec, check_budget, check_job_against_dataset
from services.usecases.transfer import with_base

log = logging.getLogger(__name__)

GPU_QUEUE, CPU_QUEUE = "gpu", "cpu"


class JobDispatcher(Protocol):
    """Sends a job id to a worker queue (Celery in production)."""

    def send(self, job_id: uuid.UUID, *, queue: str) -> None: ...


def choose_queue(device: str, uow: UnitOfWork, *, stale_after_s: float) -> str:
    """`cpu`/`gpu` as asked; `auto` picks `gpu` only while a GPU worker's heartbeat is fresh."""
    if device != "auto":
        return GPU_QUEUE if device == "gpu" else CPU_QUEUE
    since = utcnow() - timedelta(seconds=stale_after_s)
    return GPU_QUEUE if uow.workers.any_alive(queue=GPU_QUEUE, since=since) else CPU_QUEUE


def dataset_info(data: DataSpec, uow: UnitOfWork) -> DatasetInfo:
    """The dataset a job names: a built-in by name, or an upload by id."""
    try:
        dataset_id = uuid.UUID(data.dataset)
    except ValueError:
        return resolve_dataset(data.dataset, samples=data.samples, sequence_length=data.sequence_length)
    record = uow.datasets.get(dataset_id)
    if record is None:
        raise InvalidSpec(f"no uploaded dataset with id {dataset_id}: see GET /v1/datasets", field="data.dataset")
    for option in ("samples", "sequence_length"):
        if getattr(data, option) is not None:
            raise InvalidSpec(f"{option} applies to generated built-in datasets, not uploads", field=f"data.{option}")
    return upload_info(str(record.id), name=record.name, n_samples=record.n_samples, feature_shape=record.feature_shape,
                       dtype=record.dtype, target=record.target)  # fmt: skip


def request_hash(spec: JobSpec) -> str:
    """The body's fingerprint: the same spec, whatever its key order or defaults spelt out, hashes the same."""
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def submit_job(spec: JobSpec, *, uow_factory: UowFactory, dispatcher: JobDispatcher, stale_after_s: float, budget: Budget,
               idempotency_key: str | None = None) -> tuple[Job, bool]:  # fmt: skip
    """Validate the spec against its dataset and the budget, record the job as queued, then send it to a worker.

    With an `idempotency_key`, a repeat of the same body returns the job the first one made (created
    False, nothing sent again); the same key with another body is a Conflict.
    """
    body_hash = request_hash(spec)  # of the body as sent, before its base is filled in
    if idempotency_key is not None and (existing := _replay(idempotency_key, body_hash, uow_factory)) is not None:
        return existing, False
    job_id = uuid.uuid4()
    try:
        with uow_factory() as uow:
            _, stored, queue = prepare_job(spec, uow, uow_factory=uow_factory, budget=budget, stale_after_s=stale_after_s)
            uow.jobs.add(job_id=job_id, model_name=spec.model_name, spec=stored, queue=queue,
                         idempotency_key=idempotency_key, request_hash=body_hash if idempotency_key else None)  # fmt: skip
            uow.commit()
    except IntegrityError:
        if idempotency_key is None or (existing := _replay(idempotency_key, body_hash, uow_factory)) is None:
            raise
        return existing, False  # a concurrent request with the same key won
    # Only after the commit: a worker that picks the message up must find the row.
    try:
        dispatcher.send(job_id, queue=queue)
    except Exception as exc:
        log.exception("could not enqueue job %s", job_id)
        with uow_factory() as uow:
            uow.jobs.finish(job_id, state=JobState.FAILED, error=f"could not enqueue: {exc}", from_state=JobState.QUEUED)
            uow.commit()
        raise Unavailable("the job queue cannot be reached; the job was not started, try again") from exc
    return get_job(job_id, uow_factory=uow_factory), True


def prepare_job(spec: JobSpec, uow: UnitOfWork, *, uow_factory: UowFactory, budget: Budget,
                stale_after_s: float) -> tuple[JobSpec, dict[str, Any], str]:  # fmt: skip
    """A job as it would be recorded: its base filled in and pinned, its budget and dataset checked; the spec, the spec as
    stored, and the queue it goes to."""
    spec = with_base(spec, uow_factory=uow_factory, uow=uow)  # a base's layers, pinned to its version
    check_budget(spec, budget)  # pure arithmetic on the spec
    dataset = dataset_info(spec.data, uow)
    _check_against_dataset(spec, dataset)
    return spec, _stored_spec(spec, dataset), choose_queue(spec.device, uow, stale_after_s=stale_after_s)


def _check_against_dataset(spec: JobSpec, dataset: DatasetInfo) -> None:
    """The shape checks; a base's input that the dataset does not fit names the base too."""
    try:
        check_job_against_dataset(spec, dataset)
    except InvalidSpec as err:
        base = spec.network.base if spec.kind != "gan" else None
        if base is None or err.field not in ("model.input_shape", "model.inputs[0].shape"):
            raise
        raise InvalidSpec(
            f"the base, version {base.version} of '{base.model}', fixes the input: {err.message}", field="model.base"
        ) from None


def _stored_spec(spec: JobSpec, dataset: DatasetInfo) -> dict[str, Any]:
    """The spec as recorded, naming an upload by its canonical id however the request spelt it (upper case, no
    hyphens), so that deleting the dataset finds every job that uses it."""
    stored = spec.model_dump(mode="json")
    if dataset.uploaded:
        stored["data"]["dataset"] = dataset.name
    return stored


def _replay(key: str, body_hash: str, uow_factory: UowFactory) -> Job | None:
    with uow_factory() as uow:
        found = uow.jobs.by_idempotency_key(key)
    if found is None:
        return None
    job_id, first_hash = found
    if first_hash != body_hash:
        raise Conflict(f"Idempotency-Key {key!r} was used for another request body (job {job_id})", field="Idempotency-Key")
    return get_job(job_id, uow_factory=uow_factory)


def cancel_job(job_id: uuid.UUID, *, uow_factory: UowFactory) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next batch. A finished job is a Conflict."""
    with uow_factory() as uow:
        job = uow.jobs.get(job_id, with_history=False)
        if job is None:
            raise NotFound(f"no job with id {job_id}", field="job_id")
        stopped = uow.jobs.finish(job_id, state=JobState.CANCELLED, error="cancelled before it started", from_state=JobState.QUEUED)
        if not stopped and not uow.jobs.request_cancel(job_id):
            raise Conflict(f"job {job_id} has already {job.state.value}: there is nothing to cancel", field="job_id")
        uow.commit()
    return get_job(job_id, uow_factory=uow_factory)


def get_job(job_id: uuid.UUID, *, uow_factory: UowFactory, history_after: int = 0) -> Job:
    """The job, with its epochs after `history_after` (all by default)."""
    with uow_factory() as uow:
        job = uow.jobs.get(job_id, history_after=history_after)
    if job is None:
        raise NotFound(f"no job with id {job_id}", field="job_id")
    return job


def epoch_image(job_id: uuid.UUID, epoch: int, *, uow_factory: UowFactory) -> bytes:
    """The PNG a GAN job's epoch rendered; NotFound naming what is missing."""
    with uow_factory() as uow:
        job = uow.jobs.get(job_id, with_history=False)
        image = uow.jobs.epoch_image(job_id, epoch) if job is not None else None
    if job is None:
        raise NotFound(f"no job with id {job_id}", field="job_id")
    if image is None:
        what = "is not a GAN" if job.spec.get("kind") != "gan" else f"has not rendered epoch {epoch}"
        raise NotFound(f"job {job_id} {what}: no image", field="epoch")
    return image


def list_jobs(*, uow_factory: UowFactory, limit: int, offset: int, state: JobState | None) -> tuple[list[Job], int]:
    with uow_factory() as uow:
        return uow.jobs.page(limit=limit, offset=offset, state=state)


def count_jobs_by_state(*, uow_factory: UowFactory) -> dict[str, int]:
    with uow_factory() as uow:
        return uow.jobs.count_by_state()
