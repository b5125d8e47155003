"""The jobs repository: queued, claimed, heartbeat, checkpointed, taken back and ended, each as a conditional update.

Every update that moves a job takes its WHERE clause from the transition table (states.py), so SQL
cannot make a move the table forbids. Repositories never commit; the unit of work does.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.orm import Session

from services.registry.entities import EpochRecord, Job, JobState, LostJob
from services.registry.states import ACTIVE, FINAL, InvalidTransition, sources
from services.registry.tables import JobEpochRow, JobRow, utcnow


def _job(row: JobRow, history: list[EpochRecord], *, last_epoch: int | None = None) -> Job:
    return Job(
        id=row.id,
        model_name=row.model_name,
        spec=row.spec,
        state=JobState(row.state),
        queue=row.queue,
        error=row.error,
        attempt=row.attempt,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        version=row.version,
        history=history,
        cancel_requested=row.cancel_requested,
        lease_owner=row.lease_owner,
        heartbeat_at=row.heartbeat_at,
        checkpoint_epoch=row.checkpoint_epoch,
        checkpoint_attempt=row.checkpoint_attempt,
        warnings=list(row.warnings or []),
        study_id=row.study_id,
        trial_number=row.trial_number,
        last_epoch=last_epoch,
    )


def _epoch(row: JobEpochRow, drawn: bool) -> EpochRecord:
    return EpochRecord(row.epoch, row.train_loss, row.val_loss, row.metrics, row.duration_s, drawn=drawn)


def _may_move(target: JobState, *, only: JobState | None = None) -> ColumnElement[bool]:
    """The condition of a move to `target`: the job is in a state the table lets move there (just `only`, when given)."""
    return JobRow.state.in_(sources(target, only=only))


class JobRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self, *, job_id: uuid.UUID, model_name: str, spec: dict, queue: str,
        idempotency_key: str | None = None, request_hash: str | None = None, trial: tuple[uuid.UUID, int] | None = None,
    ) -> None:  # fmt: skip
        """Record a queued job; `trial` is (study id, trial number) for a study's trial."""
        now = utcnow()
        study_id, number = trial or (None, None)
        self.session.add(JobRow(
            id=job_id, model_name=model_name, spec=spec, state=JobState.QUEUED, queue=queue, attempt=0, created_at=now, dispatched_at=now,
            cancel_requested=False, idempotency_key=idempotency_key, request_hash=request_hash, study_id=study_id, trial_number=number,
        ))  # fmt: skip
        self.session.flush()  # a duplicate Idempotency-Key fails here, inside the caller's transaction

    def by_idempotency_key(self, key: str) -> tuple[uuid.UUID, str | None] | None:
        """The job created with `key`, and the hash of the body that created it."""
        row = self.session.execute(select(JobRow.id, JobRow.request_hash).where(JobRow.idempotency_key == key)).first()
        return (row[0], row[1]) if row else None

    def request_cancel(self, job_id: uuid.UUID) -> bool:
        """Ask a running job to stop at its next batch; False when it is not running."""
        result = self.session.execute(
            update(JobRow).where(JobRow.id == job_id, _may_move(JobState.CANCELLED, only=JobState.RUNNING)).values(cancel_requested=True)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def cancel_requested(self, job_id: uuid.UUID) -> bool:
        return bool(self.session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def get(self, job_id: uuid.UUID, *, with_history: bool = True, history_after: int = 0) -> Job | None:
        """The job; its history from epoch `history_after` + 1 on (a stream reads only what it has not sent). With
        `history_after`, the job's `epoch` says only the last epoch read: 0 when none came after."""
        row = self.session.get(JobRow, job_id)
        if row is None:
            return None
        return _job(row, self.history(job_id, after=history_after) if with_history else [])

    def history(self, job_id: uuid.UUID, *, after: int = 0) -> list[EpochRecord]:
        drawn = JobEpochRow.image.is_not(None)  # the image itself stays in the database (a deferred column)
        later = (JobEpochRow.job_id == job_id) & (JobEpochRow.epoch > after)
        rows = self.session.execute(select(JobEpochRow, drawn).where(later).order_by(JobEpochRow.epoch))
        return [_epoch(row, bool(has_image)) for row, has_image in rows]

    def page(self, *, limit: int, offset: int, state: JobState | None = None) -> tuple[list[Job], int]:
        query = select(JobRow)
        if state is not None:
            query = query.where(JobRow.state == state)
        count = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = list(self.session.scalars(query.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)))
        listed = JobEpochRow.job_id.in_([r.id for r in rows])
        found = self.session.execute(  # each listed job's last finished epoch, in one query (a page carries no history)
            select(JobEpochRow.job_id, func.max(JobEpochRow.epoch)).where(listed).group_by(JobEpochRow.job_id)
        )
        last = {job_id: epoch for job_id, epoch in found}
        return [_job(r, [], last_epoch=last.get(r.id, 0)) for r in rows], count

    def count_by_state(self) -> dict[str, int]:
        rows = self.session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
        return {state: count for state, count in rows}

    def claim(self, job_id: uuid.UUID, *, owner: str, lease_s: float) -> int | None:
        """queued -> running, once per attempt: the attempt number, or None where a duplicate delivery claims nothing."""
        now = utcnow()
        result = self.session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, _may_move(JobState.RUNNING))
            .values(
                state=JobState.RUNNING,
                attempt=JobRow.attempt + 1,
                started_at=func.coalesce(JobRow.started_at, now),
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                heartbeat_at=now,
            )  # fmt: skip
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return self.session.scalar(select(JobRow.attempt).where(JobRow.id == job_id))

    def heartbeat(self, job_id: uuid.UUID, attempt: int) -> bool:
        """Renew attempt `attempt`'s claim; False when the job was taken back or ended (the attempt must stop)."""
        return self._holding(job_id, attempt, heartbeat_at=utcnow())

    def set_checkpoint(self, job_id: uuid.UUID, attempt: int, epoch: int) -> bool:
        return self._holding(job_id, attempt, checkpoint_epoch=epoch, checkpoint_attempt=attempt)

    def _holding(self, job_id: uuid.UUID, attempt: int, **values: Any) -> bool:
        result = self.session.execute(
            update(JobRow).where(JobRow.id == job_id, JobRow.state == JobState.RUNNING, JobRow.attempt == attempt).values(**values)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def mark_dispatched(self, job_id: uuid.UUID, *, sent_before: datetime) -> bool:
        """Claim the re-sending of a queued job's message (one sweeper wins); False when another did, or it moved on."""
        result = self.session.execute(
            update(JobRow)
            .where(
                JobRow.id == job_id, JobRow.state == JobState.QUEUED, (JobRow.dispatched_at < sent_before) | JobRow.dispatched_at.is_(None)
            )  # fmt: skip
            .values(dispatched_at=utcnow())
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def states(self, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, JobState]:
        rows = self.session.execute(select(JobRow.id, JobRow.state).where(JobRow.id.in_(job_ids)))
        return {row[0]: JobState(row[1]) for row in rows}

    @staticmethod
    def _silent(silent_since: datetime) -> Any:
        """Running, and no heartbeat since `silent_since` or a lease run out (a row with no heartbeat at all
        is one a worker from before leases started: silent once it started long enough ago)."""
        return (JobRow.state == JobState.RUNNING) & (
            (JobRow.heartbeat_at < silent_since)
            | (JobRow.lease_expires_at < utcnow())
            | (JobRow.heartbeat_at.is_(None) & (JobRow.started_at < silent_since))
        )

    def lost_running(self, *, silent_since: datetime) -> list[LostJob]:
        """Running jobs whose worker went silent."""
        rows = self.session.execute(
            select(JobRow.id, JobRow.attempt, JobRow.queue, JobRow.cancel_requested).where(self._silent(silent_since))
        )
        return [LostJob(*row) for row in rows]

    def take_back(self, job_id: uuid.UUID, attempt: int, *, silent_since: datetime, state: JobState, **values: Any) -> bool:
        """Move attempt `attempt` of a running job to `state` (requeue or end it) only if it is still silent: a
        heartbeat that came in since it was listed wins."""
        result = self.session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.attempt == attempt, _may_move(state, only=JobState.RUNNING), self._silent(silent_since))
            .values(state=state, **values)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def requeue(self, job_id: uuid.UUID, attempt: int, *, silent_since: datetime) -> bool:
        """running (attempt `attempt`, still silent) -> queued, for another attempt."""
        return self.take_back(job_id, attempt, silent_since=silent_since, state=JobState.QUEUED, lease_owner=None,
                              lease_expires_at=None, heartbeat_at=None, dispatched_at=utcnow())  # fmt: skip

    def end_lost(self, job_id: uuid.UUID, attempt: int, *, silent_since: datetime, state: JobState, error: str) -> bool:
        return self.take_back(job_id, attempt, silent_since=silent_since, state=state, error=error, finished_at=utcnow(),
                              lease_owner=None, lease_expires_at=None)  # fmt: skip

    def unsent_queued(self, *, sent_before: datetime) -> list[tuple[uuid.UUID, str]]:
        """(id, queue) of queued jobs whose message went out before `sent_before`, oldest first."""
        rows = self.session.execute(
            select(JobRow.id, JobRow.queue)
            .where(JobRow.state == JobState.QUEUED, (JobRow.dispatched_at < sent_before) | JobRow.dispatched_at.is_(None))
            .order_by(JobRow.created_at)
        )
        return [(row[0], row[1]) for row in rows]

    def any_active_using(self, dataset: str) -> bool:
        """Whether some queued or running job trains on `dataset` (its spec's `data.dataset`), across every such job."""
        uses = JobRow.spec[("data", "dataset")].as_string() == dataset
        return bool(self.session.scalar(select(exists().where(JobRow.state.in_(sorted(ACTIVE)), uses))))

    def add_epoch(self, job_id: uuid.UUID, record: EpochRecord) -> None:
        self.session.add(
            JobEpochRow(
                job_id=job_id,
                epoch=record.epoch,
                train_loss=record.train_loss,
                val_loss=record.val_loss,
                metrics=record.metrics,
                duration_s=record.duration_s,
                created_at=utcnow(),
                image=record.image,
            )
        )

    def finish(
        self,
        job_id: uuid.UUID,
        *,
        state: JobState,
        error: str | None = None,
        version: int | None = None,
        from_state: JobState = JobState.RUNNING,
        attempt: int | None = None,
    ) -> bool:
        """Move a job from `from_state` (and `attempt`, when given) to its final state; any other job is left as it is."""
        if state not in FINAL:
            raise InvalidTransition(f"finish ends a job: {state} is not a final state")
        query = update(JobRow).where(JobRow.id == job_id, _may_move(state, only=from_state))
        if attempt is not None:
            query = query.where(JobRow.attempt == attempt)
        result = self.session.execute(
            query.values(state=state, error=error, version=version, finished_at=utcnow(), lease_owner=None, lease_expires_at=None)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def delete_epochs_after(self, job_id: uuid.UUID, epoch: int) -> None:
        """Forget the epochs after `epoch`, and the warnings they gave (a resumed attempt runs them again)."""
        self.session.execute(delete(JobEpochRow).where(JobEpochRow.job_id == job_id, JobEpochRow.epoch > epoch))
        warnings = self.session.scalar(select(JobRow.warnings).where(JobRow.id == job_id))
        if warnings:
            kept = [w for w in warnings if w["epoch"] <= epoch]
            self.session.execute(update(JobRow).where(JobRow.id == job_id).values(warnings=kept or None))

    def add_warnings(self, job_id: uuid.UUID, warnings: list[dict[str, Any]]) -> None:
        """Append `[{"epoch", "message"}]` to the job's warnings."""
        if not warnings:
            return
        current = self.session.scalar(select(JobRow.warnings).where(JobRow.id == job_id)) or []
        self.session.execute(update(JobRow).where(JobRow.id == job_id).values(warnings=[*current, *warnings]))

    def epoch_image(self, job_id: uuid.UUID, epoch: int) -> bytes | None:
        """The PNG a GAN's epoch rendered of its fixed latent batch, or None."""
        return self.session.scalar(select(JobEpochRow.image).where(JobEpochRow.job_id == job_id, JobEpochRow.epoch == epoch))
