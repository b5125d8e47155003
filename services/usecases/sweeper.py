"""The sweeper: SQL says which jobs should be running; it puts right the ones the broker or a worker lost.

- A running job whose worker went silent (no heartbeat for `stale_after_s`, or its lease ran out) is
  taken back: queued again and re-sent, its next attempt resuming from its last checkpoint; after
  `max_attempts` attempts it fails with the reason instead, so a job that kills its worker every
  time ends rather than loops. One whose cancel was asked ends cancelled.
- A queued job whose message went out more than `redispatch_after_s` ago, while its queue holds no
  messages at all, lost its message (a broker restarted without persistence) and is sent again.
- Checkpoint files of jobs that have ended (or were never recorded) are removed.
- Every running study is advanced: a trial whose worker died before it could start the next one, or a
  study past its timeout, moves on (services.usecases.studies).

Every change is a conditional update that re-checks what it acts on (a job still silent, a message
not re-sent by someone else), so sweepers on several workers can run at once, and a duplicate
message claims nothing. Heartbeats and the sweep compare clocks of different hosts: keep them in
sync (NTP) to well within `stale_after_s`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from services.registry.entities import JobState, LostJob
from services.registry.protocols import UowFactory
from services.registry.states import ACTIVE
from services.registry.tables import utcnow
from services.usecases.checkpoint_files import CheckpointCopies, files_by_job, remove_job_files
from services.usecases.jobs import JobDispatcher
from services.usecases.studies import StudyTerms, advance_running

log = logging.getLogger(__name__)
ORPHAN_AGE_S = 60.0  # a checkpoint file younger than this may belong to a job being recorded right now


@dataclass(frozen=True)
class SweepPolicy:
    max_attempts: int
    stale_after_s: float
    redispatch_after_s: float
    checkpoints: Path
    copies: CheckpointCopies | None = None  # checkpoints also kept in S3


@dataclass
class SweepReport:
    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    redispatched: list[uuid.UUID] = field(default_factory=list)
    removed_checkpoints: list[Path] = field(default_factory=list)
    studies: int = 0  # running studies advanced


def sweep(*, uow_factory: UowFactory, dispatcher: JobDispatcher, waiting: Callable[[], dict[str, int]],
          policy: SweepPolicy, studies: StudyTerms | None = None) -> SweepReport:  # fmt: skip
    """One pass. `waiting` reads the broker's queue lengths ({} when the broker cannot be asked)."""
    report = SweepReport()
    now = utcnow()
    silent_since = now - timedelta(seconds=policy.stale_after_s)
    with uow_factory() as uow:
        lost = uow.jobs.lost_running(silent_since=silent_since)
    for job in lost:
        _take_back(job, silent_since, uow_factory, dispatcher, policy, report)
    _resend_lost_messages(now - timedelta(seconds=policy.redispatch_after_s), waiting(), uow_factory, dispatcher, report)
    _remove_orphan_checkpoints(policy.checkpoints, uow_factory, report)
    if studies is not None:
        report.studies = advance_running(studies)
    return report


def _take_back(job: LostJob, silent_since: datetime, uow_factory: UowFactory, dispatcher: JobDispatcher,
               policy: SweepPolicy, report: SweepReport) -> None:  # fmt: skip
    event = {"job_id": str(job.id), "attempt": job.attempt}
    if job.cancel_requested:
        outcome, state, reason = report.cancelled, JobState.CANCELLED, "cancelled; its worker was lost before it could stop"
    elif job.attempt >= policy.max_attempts:
        outcome, state = report.failed, JobState.FAILED
        reason = (f"gave up after {job.attempt} attempts: each time, the worker running it stopped answering "
                  f"(no heartbeat for {policy.stale_after_s:g} s); KILN_MAX_ATTEMPTS is {policy.max_attempts}")  # fmt: skip
    else:
        outcome, state, reason = report.requeued, JobState.QUEUED, ""
    with uow_factory() as uow:
        if state == JobState.QUEUED:
            changed = uow.jobs.requeue(job.id, job.attempt, silent_since=silent_since)
        else:
            changed = uow.jobs.end_lost(job.id, job.attempt, silent_since=silent_since, state=state, error=reason)
        uow.commit()
    if not changed:  # a heartbeat came in since it was listed, or it ended, or another sweeper took it
        return
    outcome.append(job.id)
    if state != JobState.QUEUED:
        remove_job_files(policy.checkpoints, job.id)
        _remove_copies(policy, job.id)
        log.error("job %s %s: %s", job.id, state, reason, extra=event | {"state": state.value})
        return
    log.warning("job %s attempt %d: its worker was lost; queued again", job.id, job.attempt, extra=event | {"state": "queued"})
    _send(dispatcher, job.id, job.queue)  # if the broker is away, the message pass sends it later


def _resend_lost_messages(sent_before: datetime, lengths: dict[str, int], uow_factory: UowFactory, dispatcher: JobDispatcher,
                          report: SweepReport) -> None:  # fmt: skip
    with uow_factory() as uow:
        unsent = uow.jobs.unsent_queued(sent_before=sent_before)
    for job_id, queue in unsent:
        if lengths.get(queue) != 0:  # messages still waiting (or the broker is away): this one may be among them
            continue
        with uow_factory() as uow:
            mine = uow.jobs.mark_dispatched(job_id, sent_before=sent_before)
            uow.commit()
        if mine and _send(dispatcher, job_id, queue):
            log.warning("job %s was queued but its message was lost; sent again", job_id, extra={"job_id": str(job_id)})
            report.redispatched.append(job_id)


def _remove_orphan_checkpoints(root: Path, uow_factory: UowFactory, report: SweepReport) -> None:
    """Files of ended jobs (a job cancelled while queued, an attempt that wrote after it was taken back), and
    temporary files a killed worker left half-written."""
    for temporary in root.glob(".*.tmp") if root.is_dir() else []:
        try:
            if temporary.stat().st_mtime < time.time() - 3600:  # no checkpoint takes an hour to write
                temporary.unlink()
                report.removed_checkpoints.append(temporary)
        except FileNotFoundError:
            pass
    found = files_by_job(root)
    if not found:
        return
    with uow_factory() as uow:
        states = uow.jobs.states(list(found))
    old = time.time() - ORPHAN_AGE_S
    for job_id, paths in found.items():
        if states.get(job_id) in ACTIVE:
            continue
        for path in paths:
            try:
                if path.stat().st_mtime < old:
                    path.unlink()
                    report.removed_checkpoints.append(path)
            except FileNotFoundError:
                pass


def _remove_copies(policy: SweepPolicy, job_id: uuid.UUID) -> None:
    if policy.copies is None:
        return
    try:
        policy.copies.remove_job(job_id)
    except Exception:
        log.warning("job %s: its checkpoint copies could not be removed from the store", job_id, exc_info=True)


def _send(dispatcher: JobDispatcher, job_id: uuid.UUID, queue: str) -> bool:
    try:
        dispatcher.send(job_id, queue=queue)
    except Exception:
        log.warning("could not send job %s to the %s queue; the next sweep tries again", job_id, queue, exc_info=True)
        return False
    return True
