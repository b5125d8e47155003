"""Running a job on a worker: claim, train, export, store the artifact, register the version."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from services.data.builtins import LoadedDataset, load_builtin, load_upload
from services.data.store import DatasetStore
from services.errors import KilnError
from services.registry.artifacts import ArtifactStore, StoredArtifact
from services.registry.db import database_unavailable
from services.registry.entities import EpochRecord, JobState, NewVersion
from services.registry.s3 import store_unavailable
from services.serving.sessions import load_session
from services.serving.signature import read_signature
from services.spec import Budget, DataSpec, JobSpec, ModelSpec, check_budget
from services.training import checkpoint
from services.training.device import gpu_figures
from services.training.distributed import Distributed
from services.training.epoch_writer import EpochWriter
from services.training.loop import Diverged, EpochResult, OutOfTime, Stopped
from services.training.pipeline import BaseWeights, Checkpointing, ParityCheck, TrainingOutcome, load_weights, train_and_export
from services.usecases.attempts import CancelWatch, JobLease, LeaseLost, LeaseTerms
from services.usecases.checkpoint_files import CheckpointCopies, attempt_file, remove_job_files
from services.usecases.datasets import input_range
from services.usecases.jobs import JobDispatcher, UowFactory
from services.usecases.ranks import RankDied, RankLauncher, RankRequest, requeue_dead_attempt, supervise_ranks
from services.usecases.studies import StudyTerms
from services.usecases.transfer import parent_record
from services.usecases.trials import Pruned, PruneWatch
from services.usecases.versions import discard_if_unreferenced, register_version

if TYPE_CHECKING:  # imported for real only by the worker, after it has set up multiprocess metrics
    from services.metrics import WorkerMetrics

log = logging.getLogger(__name__)
DEFAULT_TEST_SPLIT = 0.2


@dataclass(frozen=True)
class WorkerContext:
    """What a worker process holds for the jobs it runs."""

    uow_factory: UowFactory
    store: ArtifactStore
    device: torch.device
    parity: ParityCheck
    datasets: DatasetStore
    max_in_memory_bytes: int
    checkpoints: Path  # one file per running job
    budget: Budget  # checked again before anything is allocated: the limits may be lower here than at submission
    metrics: WorkerMetrics | None = None  # None where nothing scrapes (tests in-process)
    worker_name: str = ""
    lease: LeaseTerms = field(default_factory=lambda: LeaseTerms())
    studies: StudyTerms | None = None  # where a trial's job, once it ends, starts the study's next trial
    checkpoint_copies: CheckpointCopies | None = None  # with an S3 store: each checkpoint copied there too
    dispatcher: JobDispatcher | None = None  # sends a job again (a multi-process attempt retried); None: retried in place
    launch_ranks: RankLauncher | None = None  # starts a multi-process job's ranks (worker/launch.py); None: one process only


def run_job(job_id: uuid.UUID, ctx: WorkerContext) -> None:
    """Run one attempt of a job to its end; a job this call cannot claim (a duplicate delivery) is left alone.

    An attempt after the first resumes from the last checkpoint an earlier one wrote.
    """
    with ctx.uow_factory() as uow:
        attempt = uow.jobs.claim(job_id, owner=ctx.worker_name or "worker", lease_s=ctx.lease.lease_s)
        job = uow.jobs.get(job_id, with_history=False)
        uow.commit()
    if attempt is None or job is None:
        log.info("job %s not claimed (state %s): nothing to do", job_id, job.state if job else "missing")
        return
    event = {"job_id": str(job_id), "attempt": attempt, "model": job.model_name}
    log.info("job %s running on %s, attempt %d", job_id, ctx.device, attempt, extra=event | {"state": "running"})
    try:
        prune = PruneWatch(job.study_id, job.trial_number, ctx.uow_factory) if job.study_id and job.trial_number is not None else None
        with JobLease(job_id, attempt, ctx) as lease:
            version = _train_and_register(job_id, attempt, job.checkpoint_attempt, JobSpec.model_validate(job.spec), ctx, lease, prune)
    except LeaseLost as lost:
        log.warning("job %s attempt %d stopped: %s", job_id, attempt, lost, extra=event)
        return  # the attempt that holds the job now owns its checkpoints too
    except RankDied as died:  # one of the job's training processes died: another attempt at once, from the last checkpoint
        if (reason := requeue_dead_attempt(job_id, attempt, died, ctx)) is None:
            log.warning("job %s attempt %d: %s; trying again", job_id, attempt, died, extra=event)
            return run_job(job_id, ctx) if ctx.dispatcher is None else None  # else sent again: a task of its own, limits anew
        _end(job_id, attempt, ctx, state=JobState.FAILED, error=reason, event=event)
        return
    except Stopped as stop:
        _end(job_id, attempt, ctx, state=JobState.CANCELLED, error=str(stop), event=event)
        return
    except Pruned as pruned:  # a study's trial the pruner stopped: its outcome is written with the job's end
        assert job.study_id is not None and job.trial_number is not None
        _end(job_id, attempt, ctx, state=JobState.CANCELLED, error=str(pruned), event=event, pruned=(job.study_id, job.trial_number))
        return
    except Exception as exc:
        if database_unavailable(exc) or store_unavailable(exc):  # not the job's fault: left running, for the sweeper to
            what = "registry database" if database_unavailable(exc) else "artifact store"  # take back and resume
            log.error("job %s attempt %d stopped: the %s cannot be reached (%s); it will be resumed",
                      job_id, attempt, what, type(exc).__name__, extra=event)  # fmt: skip
            return
        readable = isinstance(exc, Diverged | OutOfTime)
        reason = exc.message if isinstance(exc, KilnError) else str(exc) if readable else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, KilnError | Diverged | OutOfTime):
            log.error("job %s attempt %d raised", job_id, attempt, exc_info=True, extra=event)
        warnings = _warnings(exc.epoch, [reason]) if isinstance(exc, Diverged) else []  # the job is told, as of other warnings
        _end(job_id, attempt, ctx, state=JobState.FAILED, error=reason, event=event, warnings=warnings)
        return
    _remove_checkpoints(job_id, ctx)
    log.info("job %s succeeded: %s version %d", job_id, job.model_name, version, extra=event | {"state": "succeeded", "version": version})
    _count(ctx, "succeeded")


def _end(job_id: uuid.UUID, attempt: int, ctx: WorkerContext, *, state: JobState, error: str, event: dict[str, Any],
         warnings: list[dict[str, Any]] | None = None, pruned: tuple[uuid.UUID, int] | None = None) -> None:  # fmt: skip
    """End the job as `state` if this attempt still holds it; an attempt taken back meanwhile ends nothing. `pruned` is the
    (study, trial) the job ran, settled as pruned in the same transaction."""
    with ctx.uow_factory() as uow:
        ended = uow.jobs.finish(job_id, state=state, error=error, attempt=attempt)
        if ended and warnings:
            uow.jobs.add_warnings(job_id, warnings)
        settled = ended and pruned is not None and uow.studies.settle(*pruned, outcome="pruned")
        uow.commit()
    if settled and ctx.metrics is not None:
        ctx.metrics.study_trials.labels("pruned").inc()
    if not ended:
        log.warning("job %s attempt %d: %s, but the job was no longer this attempt's", job_id, attempt, error, extra=event)
        return
    _remove_checkpoints(job_id, ctx)
    if warnings and ctx.metrics is not None:
        ctx.metrics.warnings.labels(event.get("model", "")).inc(len(warnings))
    log.log(logging.ERROR if state == JobState.FAILED else logging.INFO, "job %s %s: %s", job_id, state, error,
            extra=event | {"state": state.value})  # fmt: skip
    _count(ctx, state.value)


def _remove_checkpoints(job_id: uuid.UUID, ctx: WorkerContext) -> None:
    remove_job_files(ctx.checkpoints, job_id)
    if ctx.checkpoint_copies is not None:
        try:
            ctx.checkpoint_copies.remove_job(job_id)
        except Exception:  # the job has ended either way; the copies are only checkpoints
            log.warning("job %s: its checkpoint copies could not be removed from the store", job_id, exc_info=True)


def _count(ctx: WorkerContext, outcome: str) -> None:
    if ctx.metrics is not None:
        ctx.metrics.jobs_finished.labels(outcome).inc()


def _load(data: DataSpec, ctx: WorkerContext) -> tuple[LoadedDataset, uuid.UUID | None]:
    """The job's dataset, and its id when it is an upload (the version then records it)."""
    try:
        dataset_id = uuid.UUID(data.dataset)
    except ValueError:
        return load_builtin(data.dataset, samples=data.samples, sequence_length=data.sequence_length, seed=data.seed), None
    with ctx.uow_factory() as uow:
        record = uow.datasets.get(dataset_id)
    if record is None:
        raise KilnError(f"dataset {dataset_id} was deleted after the job was submitted")
    loaded = load_upload(record, ctx.datasets.folder(dataset_id), test_split=data.test_split or DEFAULT_TEST_SPLIT, seed=data.seed,
                         max_in_memory_bytes=ctx.max_in_memory_bytes)  # fmt: skip
    return loaded, dataset_id


def _resume_point(job_id: uuid.UUID, attempt: int, written_by: int | None, ctx: WorkerContext) -> dict[str, Any] | None:
    """The checkpoint of attempt `written_by` (the last to record one), with the epoch history in SQL made to match it."""
    path = attempt_file(ctx.checkpoints, job_id, written_by) if written_by else None
    if path is not None and ctx.checkpoint_copies is not None:
        ctx.checkpoint_copies.fetch(path)  # written on another host, perhaps
    if path is None or not path.exists():
        if attempt > 1:
            log.info("job %s attempt %d: no checkpoint, starting over", job_id, attempt)
        state = None
    else:
        state = checkpoint.load(path)
        if state.get("format") not in checkpoint.READABLE:  # an earlier Kiln's (its weights are laid out otherwise) or a later's
            log.info("job %s attempt %d: checkpoint format %r is not one of %s, starting over", job_id, attempt, state.get("format"),
                     checkpoint.READABLE)  # fmt: skip
            state = None
    epoch = state["epoch"] if state else 0
    with ctx.uow_factory() as uow:
        if not uow.jobs.heartbeat(job_id, attempt):  # fenced, and first: it also locks the row in PostgreSQL
            raise LeaseLost(f"attempt {attempt} no longer holds the job")
        # A checkpoint is written before its epoch is recorded, so SQL never runs ahead of it.
        uow.jobs.delete_epochs_after(job_id, epoch)
        recorded = {e.epoch for e in uow.jobs.history(job_id)}
        for result in checkpoint.history(state) if state else []:
            if result.epoch not in recorded:
                uow.jobs.add_epoch(job_id, _epoch_record(result))
                uow.jobs.add_warnings(job_id, _warnings(result.epoch, result.warnings))
        uow.commit()
    if state:
        log.info("job %s attempt %d resumes after epoch %d", job_id, attempt, epoch, extra={"job_id": str(job_id), "epoch": epoch})
    return state


def _train_and_register(job_id: uuid.UUID, attempt: int, written_by: int | None, spec: JobSpec, ctx: WorkerContext,
                        lease: JobLease, prune: PruneWatch | None) -> int:  # fmt: skip
    check_budget(spec, ctx.budget)  # an InvalidSpec fails the job for good: another attempt would need the same
    watch = CancelWatch(job_id, ctx.uow_factory)

    def should_stop() -> bool:
        if lease.lost.is_set():
            raise LeaseLost(f"attempt {attempt} no longer holds the job")
        return watch()

    if spec.processes > 1:  # the ranks train and register (train_rank); this process holds the lease and watches them
        state = _resume_point(job_id, attempt, written_by, ctx)  # SQL's history made to match the checkpoint the ranks restore
        resume_from = attempt_file(ctx.checkpoints, job_id, written_by) if state and written_by else None
        outcomes = ctx.checkpoints / f"{job_id}.{attempt}.ranks"
        return supervise_ranks(RankRequest(job_id, attempt, spec.processes, str(ctx.device), resume_from, outcomes), ctx, should_stop)
    loaded = _load(spec.data, ctx)
    resume = _resume_point(job_id, attempt, written_by, ctx)
    version = _train_and_store(job_id, attempt, spec, loaded, ctx, resume=resume, base=_base_weights(spec, ctx), should_stop=should_stop,
                               prune=prune)  # fmt: skip
    assert version is not None
    return version


def train_rank(job_id: uuid.UUID, attempt: int, ctx: WorkerContext, *, resume: Path | None, rank: int, world_size: int) -> None:
    """One rank of a multi-process attempt (worker.ddp, under torchrun, its process group initialised): every rank trains
    its shard; rank 0 alone records the epochs, checkpoints, exports and registers the version, as a single process does."""
    with ctx.uow_factory() as uow:
        job = uow.jobs.get(job_id, with_history=False)
    if job is None or job.state != JobState.RUNNING or job.attempt != attempt:
        raise LeaseLost(f"attempt {attempt} no longer holds the job")
    spec = JobSpec.model_validate(job.spec)
    distributed, writer = Distributed(rank, world_size, seed=spec.training.seed), rank == 0
    study, trial = job.study_id, job.trial_number
    prune = PruneWatch(study, trial, ctx.uow_factory) if writer and study and trial is not None else None
    for turn in (True, False):  # rank 0 fetches first: the others then find the store's local copies made
        if writer == turn:
            loaded, base = _load(spec.data, ctx), _base_weights(spec, ctx)
        distributed.barrier()
    state = checkpoint.load(resume) if resume is not None else None
    _train_and_store(job_id, attempt, spec, loaded, ctx, resume=state, base=base, should_stop=None, prune=prune, distributed=distributed)


def _train_and_store(job_id: uuid.UUID, attempt: int, spec: JobSpec, loaded: tuple[LoadedDataset, uuid.UUID | None], ctx: WorkerContext,
                     *, resume: dict[str, Any] | None, base: BaseWeights | None, should_stop: Callable[[], bool] | None,
                     prune: PruneWatch | None, distributed: Distributed | None = None) -> int | None:  # fmt: skip
    """Train, export, store the files and register the version (None from a rank that does not write)."""
    (data, dataset_id), watch = loaded, CancelWatch(job_id, ctx.uow_factory)
    epochs = spec.training.epochs  # after the last, a trial is not judged
    onnx_path, weights_path = ctx.store.temp_path(), ctx.store.temp_path(".safetensors")
    try:
        with EpochWriter() as writer:  # each epoch's checkpoint and record are written while the next one trains
            outcome = train_and_export(
                spec,
                data,
                device=ctx.device,
                onnx_path=onnx_path,
                parity=ctx.parity,
                on_epoch_end=lambda r: _epoch_ended(
                    job_id, attempt, spec.model_name, r, ctx, prune if r.epoch < epochs else None, writer
                ),  # fmt: skip
                should_stop=should_stop,
                checkpointing=Checkpointing(attempt_file(ctx.checkpoints, job_id, attempt), resume, writer),
                weights_path=weights_path,
                base_weights=base,
                distributed=distributed,
            )
            writer.flush()  # every epoch recorded (and the last checkpoint written) before the version is
        if distributed is not None and not distributed.is_writer:
            return None
        signature = read_signature(load_session(onnx_path)).to_dict()
        stored = [ctx.store.put(onnx_path)]
        try:
            stored.append(ctx.store.put(weights_path))
        except BaseException:
            _discard(stored, ctx)
            raise
    finally:
        onnx_path.unlink(missing_ok=True)
        weights_path.unlink(missing_ok=True)
    try:
        if watch(force=True):  # cancelled between the last batch and now: register nothing
            raise Stopped("cancelled before its version was registered")
        return _register(job_id, attempt, spec, data, dataset_id, outcome, stored[0], stored[1], signature, ctx)
    except BaseException:
        _discard(stored, ctx)
        raise


def _base_weights(spec: JobSpec, ctx: WorkerContext) -> BaseWeights | None:
    """The state dict of the version the job's model starts from, pinned at submission; None without a base."""
    base = spec.network.base if spec.kind != "gan" else None
    if base is None or base.version is None:
        return None
    with ctx.uow_factory() as uow:
        parent = uow.models.get_version(base.model, base.version)
    if parent is None or parent.weights_sha256 is None or not ctx.store.exists(parent.weights_sha256):
        raise KilnError(f"the base, version {base.version} of '{base.model}', or its weights, went away after submission")
    parent_inputs = ModelSpec.model_validate(parent.spec).input_names
    vocabulary = (parent.preprocessing or {}).get("vocabulary") if base.vocabulary else None
    return BaseWeights(load_weights(ctx.store.path_for(parent.weights_sha256)), parent_inputs, vocabulary)


def _discard(stored: list[StoredArtifact], ctx: WorkerContext) -> None:
    """Remove what this attempt stored and no version points to: a failed registration leaves no orphan file."""
    for item in stored:
        try:
            discard_if_unreferenced(item.sha256, uow_factory=ctx.uow_factory, store=ctx.store)
        except Exception:  # the store or the registry is away: the error that brought us here is the one to report
            log.warning("artifact %s could not be discarded; it is left unreferenced", item.sha256, exc_info=True)


def _epoch_record(result: EpochResult) -> EpochRecord:
    metrics = result.metrics
    return EpochRecord(result.epoch, metrics["loss"], metrics.get("val_loss"), metrics, result.duration_s, result.image)


def _warnings(epoch: int, messages: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    return [{"epoch": epoch, "message": message} for message in messages]


def _epoch_ended(job_id: uuid.UUID, attempt: int, model_name: str, result: EpochResult, ctx: WorkerContext,
                 prune: PruneWatch | None, writer: EpochWriter) -> None:  # fmt: skip
    """Record the epoch behind the next one's training; a trial's pruner (prune: None after the last epoch) waits for it."""

    def store() -> None:
        if ctx.checkpoint_copies is not None:  # the checkpoint's write was given first: the file is complete
            ctx.checkpoint_copies.upload(attempt_file(ctx.checkpoints, job_id, attempt))
        _record_epoch(job_id, attempt, model_name, result, ctx)

    writer.submit(store)
    if prune is not None:
        writer.flush()
        prune(result.epoch)


def _record_epoch(job_id: uuid.UUID, attempt: int, model_name: str, result: EpochResult, ctx: WorkerContext) -> None:
    """The epoch's row and the job's checkpoint epoch, in one transaction, while this attempt holds the job."""
    metrics = result.metrics
    with ctx.uow_factory() as uow:
        if not uow.jobs.set_checkpoint(job_id, attempt, result.epoch):
            raise LeaseLost(f"attempt {attempt} no longer holds the job")
        uow.jobs.add_epoch(job_id, _epoch_record(result))
        uow.jobs.add_warnings(job_id, _warnings(result.epoch, result.warnings))
        uow.commit()
    for warning in result.warnings:
        log.warning("job %s epoch %d: %s", job_id, result.epoch, warning, extra={"job_id": str(job_id), "epoch": result.epoch})
    event = {"job_id": str(job_id), "epoch": result.epoch, "loss": metrics["loss"], "val_loss": metrics.get("val_loss")}
    log.info("job %s epoch %d loss %.4f val_loss %s", job_id, result.epoch, metrics["loss"], metrics.get("val_loss"), extra=event)
    if ctx.metrics is not None:
        ctx.metrics.epoch(model_name, seconds=result.duration_s, samples=result.samples, metrics=metrics)
        if result.warnings:
            ctx.metrics.warnings.labels(model_name).inc(len(result.warnings))
        if ctx.device.type == "cuda":
            ctx.metrics.gpu(ctx.worker_name, *gpu_figures(ctx.device))


def _register(
    job_id: uuid.UUID,
    attempt: int,
    spec: JobSpec,
    data: LoadedDataset,
    dataset_id: uuid.UUID | None,
    outcome: TrainingOutcome,
    artifact: StoredArtifact,
    weights: StoredArtifact,
    signature: dict,
    ctx: WorkerContext,
) -> int:
    """Register the next version and finish the job in one transaction, retrying a version-number race."""
    new = NewVersion(
        model_name=spec.model_name,
        job_id=job_id,
        artifact_sha256=artifact.sha256,
        artifact_size=artifact.size,
        signature=signature,
        metrics=outcome.metrics,
        spec=spec.model.model_dump(mode="json"),
        hyperparameters=spec.training.model_dump(mode="json") | {"validation_split": spec.data.validation_split},
        dataset={
            "name": data.info.name,
            "sha256": data.sha256,
            "train_rows": len(data.x_train),
            "test_rows": len(data.x_test),
            "spec": spec.data.model_dump(mode="json"),
            "input_range": input_range(data.info.name, dataset_id, ctx.uow_factory),
        },  # fmt: skip
        dataset_id=dataset_id,
        labels=outcome.labels,
        preprocessing=outcome.preprocessing,
        task=outcome.task or spec.task,
        anomaly=outcome.anomaly,
        generation=outcome.generation,
        parent=parent_record(spec, outcome.unfrozen),
        weights_sha256=weights.sha256,
        weights_size=weights.size,
    )
    return register_version(new, uow_factory=ctx.uow_factory, job_attempt=attempt)
