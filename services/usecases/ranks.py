"""Multi-process jobs (`distributed.processes` > 1), from the worker's side: start the job's ranks, supervise them, and
turn how they ended into what a single-process attempt would have raised.

The worker's own process keeps the attempt's lease (its heartbeat) and watches for a cancel while torchrun runs the
ranks (worker/launch.py starts it; services never import an entrypoint, so it comes in as a `RankLauncher`). Rank 0
records epochs, checkpoints, exports and registers the version exactly as a single process does
(services.usecases.training.train_rank). A rank that raises writes what it raised into the attempt's outcome
folder; a rank that dies says nothing, torchrun stops the others, and the attempt is retried at once as a new
attempt that resumes from the last checkpoint, up to KILN_MAX_ATTEMPTS.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from services.errors import KilnError
from services.registry.db import database_unavailable
from services.registry.entities import JobState
from services.registry.s3 import store_unavailable
from services.registry.tables import utcnow
from services.training.loop import Diverged, OutOfTime, Stopped
from services.usecases.attempts import LeaseLost
from services.usecases.trials import Pruned

if TYPE_CHECKING:
    from services.usecases.training import WorkerContext

log = logging.getLogger(__name__)
POLL_S = 0.5  # how often the supervisor looks at the ranks, the cancel flag and the lease


@dataclass(frozen=True)
class RankRequest:
    """What every rank of one attempt is told."""

    job_id: uuid.UUID
    attempt: int
    processes: int
    device: str  # "cpu", or the first GPU the ranks take ("cuda:0": rank r trains on the r-th GPU after it)
    resume: Path | None  # the checkpoint every rank restores from (None: from the start)
    outcomes: Path  # the folder where a rank that raises writes what it raised


class RankLauncher(Protocol):
    def __call__(self, request: RankRequest, *, should_stop: Callable[[], bool], poll_s: float) -> int | None:
        """Run the ranks until they end and return their exit status (0: rank 0 registered the version), or, once
        `should_stop()` says so, stop every one of them and return None."""
        ...


class RankDied(RuntimeError):
    """A training process ended without saying why (killed, or a peer's end broke a collective): retried at once."""


class LeftForSweeper(LeaseLost):
    """A rank could not reach the registry or the store: as a single process would, the attempt leaves the job running,
    for the sweeper to take back and resume once its heartbeat is stale."""


def supervise_ranks(request: RankRequest, ctx: WorkerContext, should_stop: Callable[[], bool]) -> int:
    """Run the attempt's ranks to their end; the version rank 0 registered, or what a single process would have raised."""
    if ctx.launch_ranks is None:
        raise KilnError("this worker cannot start training processes of its own: run it with `python -m worker`")

    def stop_unless_registered() -> bool:
        try:
            return should_stop()
        except LeaseLost:  # the job is no longer running: because rank 0 finished it, its processes are about to exit
            if _registered(request, ctx) is None:
                raise
            return False

    shutil.rmtree(request.outcomes, ignore_errors=True)
    request.outcomes.mkdir(parents=True)
    try:
        status = ctx.launch_ranks(request, should_stop=stop_unless_registered, poll_s=POLL_S)
        if status != 0 and (version := _registered(request, ctx)) is not None:
            return version  # rank 0 registered it, then a process failed on its way out, or a cancel came too late
        if status is None:
            raise Stopped("cancelled while its training processes ran")
        if status != 0:
            raise raised_by_ranks(request.outcomes, status)
    finally:
        shutil.rmtree(request.outcomes, ignore_errors=True)
    if (version := _registered(request, ctx)) is None:
        raise KilnError("the training processes ended without registering a version")
    return version


def _registered(request: RankRequest, ctx: WorkerContext) -> int | None:
    """The version this attempt's rank 0 registered, if it did (the job then succeeded with it)."""
    with ctx.uow_factory() as uow:
        job = uow.jobs.get(request.job_id, with_history=False)
    succeeded = job is not None and job.state == JobState.SUCCEEDED and job.attempt == request.attempt
    return job.version if succeeded and job is not None else None


def write_outcome(folder: Path, rank: int, exc: BaseException) -> None:
    """What rank `rank` raised, for its supervisor: the kind of ending it is, its message, and its epoch if it has one."""
    if database_unavailable(exc) or store_unavailable(exc):
        kind = "unavailable"
    elif _broken_collective(exc):
        kind = "collective"
    else:
        kinds = [("lease_lost", LeaseLost), ("stopped", Stopped), ("pruned", Pruned), ("diverged", Diverged), ("out_of_time", OutOfTime),
                 ("failed", KilnError)]  # fmt: skip
        kind = next((name for name, cls in kinds if isinstance(exc, cls)), "error")
    message = exc.message if isinstance(exc, KilnError) else str(exc) if kind != "error" else f"{type(exc).__name__}: {exc}"
    record = {"rank": rank, "kind": kind, "message": message, "epoch": getattr(exc, "epoch", 0)}
    temporary = folder / f".rank-{rank}.json.tmp"
    temporary.write_text(json.dumps(record))
    temporary.replace(folder / f"rank-{rank}.json")


def _broken_collective(exc: BaseException) -> bool:
    """Whether `exc` only says that a collective broke, the mark of a peer that died (torch.distributed's DistError and
    its kinds, or gloo's closed connection), rather than what went wrong in this rank."""
    named = any(cls.__name__ in {"DistError", "DistBackendError", "DistNetworkError", "DistStoreError"} for cls in type(exc).__mro__)
    said = str(exc).lower()
    return named or any(mark in said for mark in ("connection closed by peer", "connection reset by peer", "broken pipe"))


_ORDER = {"error": 1, "collective": 2}  # a rank's own ending first, then a real error, then what only follows a peer's end


def raised_by_ranks(folder: Path, status: int) -> BaseException:
    """What the attempt raises for ranks that ended with `status`: the ending a rank wrote (rank 0's first); a rank's
    error as a single process would fail with it (another attempt would meet it again); RankDied when no rank said
    why, or none said more than that a collective broke (the mark of a peer that died)."""
    records = sorted((json.loads(p.read_text()) for p in folder.glob("rank-*.json")), key=lambda r: (_ORDER.get(r["kind"], 0), r["rank"]))
    if not records or records[0]["kind"] == "collective":
        said = f"; rank {records[0]['rank']}: {records[0]['message']}" if records else ""
        return RankDied(f"a training process died (torchrun exit status {status}){said}")
    if records[0]["kind"] == "error":
        return KilnError(records[0]["message"])  # "TypeError: ...", as run_job words a single process' error
    kind, message, epoch = records[0]["kind"], records[0]["message"], records[0]["epoch"]
    endings: dict[str, Callable[[], BaseException]] = {
        "unavailable": lambda: LeftForSweeper(f"rank {records[0]['rank']}: {message}; the job is left for the sweeper to resume"),
        "lease_lost": lambda: LeaseLost(message), "stopped": lambda: Stopped(message), "pruned": lambda: Pruned(message, epoch),
        "diverged": lambda: Diverged(message, epoch), "out_of_time": lambda: OutOfTime(message), "failed": lambda: KilnError(message),
    }  # fmt: skip
    return endings[kind]()


def requeue_dead_attempt(job_id: uuid.UUID, attempt: int, died: RankDied, ctx: WorkerContext) -> str | None:
    """Queue the job again for another attempt, as the sweeper does for a silent worker, but at once: None, or the reason
    the job fails instead, once KILN_MAX_ATTEMPTS attempts have run."""
    if attempt >= ctx.lease.max_attempts:
        return (
            f"gave up after {attempt} attempts: each time, a training process died ({died}); KILN_MAX_ATTEMPTS is {ctx.lease.max_attempts}"
        )
    with ctx.uow_factory() as uow:
        # requeue takes back an attempt silent since the time given; every heartbeat of this one is older than a second on.
        requeued = uow.jobs.requeue(job_id, attempt, silent_since=utcnow() + timedelta(seconds=1))
        job = uow.jobs.get(job_id, with_history=False)
        uow.commit()
    if requeued and job is not None and ctx.dispatcher is not None:
        try:  # a new message, so the next attempt runs as a task of its own, with its own time limits
            ctx.dispatcher.send(job_id, queue=job.queue)
        except Exception:  # the sweeper sends a queued job's message again when its queue is empty
            log.warning("job %s: could not be sent again; the sweeper will", job_id, exc_info=True)
    return None  # requeued, or moved on meanwhile (taken back, ended): the next claim finds out which
