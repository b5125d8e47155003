"""The sweeper: SQL says which jobs should be running; it puts right the ones the broker or a worker lost.

- A running job whose worker went silent (no heartbeat for `stale_after_s`, or its lease ran out) is
  taken back: queued again and re-sent, its next attempt resuming from its last checkpoint; after
  `max_attempts` attempts it fails with the reason instead, so a job that kills its worker every
  time ends rather than loops.
- A queued job whose message went out more than `redispatch_after_s` ago, while its queue holds no
  messages at all, lost its message (a broker restarted without persistence) and is sent again.

Every step is a conditional update, so sweepers on several workers can run at once: one wins each
change, and a duplicate message claims nothing. Safe to run at any time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from services.registry.entities import JobState
from services.registry.tables import utcnow
from services.usecases.jobs import JobDispatcher, UowFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPolicy:
    max_attempts: int
    stale_after_s: float
    redispatch_after_s: float
    checkpoints: Path  # where a job given up on leaves a checkpoint to remove


@dataclass
class SweepReport:
    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    redispatched: list[uuid.UUID] = field(default_factory=list)


def sweep(*, uow_factory: UowFactory, dispatcher: JobDispatcher, waiting: Callable[[], dict[str, int]],
          policy: SweepPolicy) -> SweepReport:  # fmt: skip
    """One pass. `waiting` reads the broker's queue lengths ({} when the broker cannot be asked)."""
    report = SweepReport()
    now = utcnow()
    with uow_factory() as uow:
        lost = uow.jobs.lost_running(silent_since=now - timedelta(seconds=policy.stale_after_s))
    for job_id, attempt, queue in lost:
        _take_back(job_id, attempt, queue, uow_factory, dispatcher, policy, report)
    lengths = waiting()
    with uow_factory() as uow:
        unsent = uow.jobs.unsent_queued(sent_before=now - timedelta(seconds=policy.redispatch_after_s))
    for job_id, queue in unsent:
        if lengths.get(queue) != 0:  # messages still waiting (or the broker is away): this one may be among them
            continue
        with uow_factory() as uow:
            uow.jobs.mark_dispatched(job_id)
            uow.commit()
        if _send(dispatcher, job_id, queue):
            log.warning("job %s was queued but its message was lost; sent again", job_id, extra={"job_id": str(job_id)})
            report.redispatched.append(job_id)
    return report


def _take_back(job_id: uuid.UUID, attempt: int, queue: str, uow_factory: UowFactory, dispatcher: JobDispatcher,
               policy: SweepPolicy, report: SweepReport) -> None:  # fmt: skip
    event = {"job_id": str(job_id), "attempt": attempt}
    with uow_factory() as uow:
        if attempt >= policy.max_attempts:
            reason = (f"gave up after {attempt} attempts: each time, the worker running it stopped answering "
                      f"(no heartbeat for {policy.stale_after_s:g} s); KILN_MAX_ATTEMPTS is {policy.max_attempts}")  # fmt: skip
            changed = uow.jobs.finish(job_id, state=JobState.FAILED, error=reason, attempt=attempt)
        else:
            changed = uow.jobs.requeue(job_id, attempt)
        uow.commit()
    if not changed:  # it moved on its own meanwhile (a late heartbeat, or it ended)
        return
    if attempt >= policy.max_attempts:
        (policy.checkpoints / f"{job_id}.pt").unlink(missing_ok=True)
        log.error("job %s failed: its worker was lost on all %d attempts", job_id, attempt, extra=event | {"state": "failed"})
        report.failed.append(job_id)
        return
    log.warning("job %s attempt %d: its worker was lost; queued again", job_id, attempt, extra=event | {"state": "queued"})
    report.requeued.append(job_id)
    _send(dispatcher, job_id, queue)  # if the broker is away, the queued-job pass sends it later


def _send(dispatcher: JobDispatcher, job_id: uuid.UUID, queue: str) -> bool:
    try:
        dispatcher.send(job_id, queue=queue)
    except Exception:
        log.warning("could not send job %s to the %s queue; the next sweep tries again", job_id, queue, exc_info=True)
        return False
    return True
