"""The studies repository: a study, its trials, and each trial's job as SQL has them. It never commits."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import exists, func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from services.errors import Unavailable
from services.registry.entities import JobState, Study, StudyState, Trial
from services.registry.states import FINAL
from services.registry.tables import JobEpochRow, JobRow, StudyRow, StudyTrialRow, utcnow


def _study(row: StudyRow, trials: list[Trial], count: int) -> Study:
    return Study(id=row.id, name=row.name, model_name=row.model_name, spec=row.spec, state=StudyState(row.state), error=row.error,
                 created_at=row.created_at, finished_at=row.finished_at, best_trial=row.best_trial, best_version=row.best_version,
                 importances=row.importances, trials=trials, trial_count=count)  # fmt: skip


class StudyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, *, study_id: uuid.UUID, name: str, model_name: str, spec: dict[str, Any]) -> None:
        self.session.add(StudyRow(id=study_id, name=name, model_name=model_name, spec=spec, state=StudyState.RUNNING,
                                  created_at=utcnow(), revision=0))  # fmt: skip
        self.session.flush()

    def lock(self, study_id: uuid.UUID, *, wait: bool = True) -> bool:
        """Take the study for this transaction (a row lock in PostgreSQL, the write lock in SQLite), so coordinators that
        run at once take turns; False when there is no such study, or, without `wait`, when another holds it.

        In PostgreSQL a wait is bounded (lock_timeout), and a holder that goes quiet mid-transaction (its host died) is
        cut off by the server (idle_in_transaction_session_timeout), so one lost coordinator cannot stall the others."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("SET LOCAL lock_timeout = '10s'"))
            self.session.execute(text("SET LOCAL idle_in_transaction_session_timeout = '60s'"))
            if not wait:
                free = select(StudyRow.id).where(StudyRow.id == study_id).with_for_update(skip_locked=True)
                if self.session.scalar(free) is None:
                    return False
        try:
            result = self.session.execute(update(StudyRow).where(StudyRow.id == study_id).values(revision=StudyRow.revision + 1))
        except OperationalError as err:
            if getattr(err.orig, "sqlstate", None) == "55P03":  # lock_timeout: another coordinator has held it that long
                raise Unavailable(f"study {study_id} is busy: another coordinator holds it; try again", field="study_id") from None
            raise
        return result.rowcount == 1  # type: ignore[attr-defined]

    def get(self, study_id: uuid.UUID, *, with_trials: bool = True) -> Study | None:
        row = self.session.get(StudyRow, study_id, populate_existing=True)
        if row is None:
            return None
        trials = self.trials(study_id) if with_trials else []
        return _study(row, trials, len(trials) if with_trials else self._count(study_id))

    def _count(self, study_id: uuid.UUID) -> int:
        return self.session.scalar(select(func.count()).where(StudyTrialRow.study_id == study_id)) or 0

    def trials(self, study_id: uuid.UUID) -> list[Trial]:
        """Every trial in number order, with its job's state, version and each finished epoch's metrics."""
        rows = self.session.execute(
            select(StudyTrialRow, JobRow.state, JobRow.error, JobRow.version)
            .outerjoin(JobRow, JobRow.id == StudyTrialRow.job_id)
            .where(StudyTrialRow.study_id == study_id)
            .order_by(StudyTrialRow.number)
        ).all()
        job_ids = [row[0].job_id for row in rows if row[0].job_id is not None]
        epochs: dict[uuid.UUID, list[dict[str, float]]] = {}
        if job_ids:
            found = self.session.execute(
                select(JobEpochRow.job_id, JobEpochRow.metrics).where(JobEpochRow.job_id.in_(job_ids)).order_by(JobEpochRow.epoch)
            )
            for job_id, metrics in found:
                epochs.setdefault(job_id, []).append(metrics)
        return [
            Trial(
                number=t.number,
                job_id=t.job_id,
                params=t.params,
                system_attrs=t.system_attrs,
                outcome=t.outcome,
                value=t.value,
                error=t.error,
                created_at=t.created_at,
                job_state=JobState(state) if state else None,
                job_error=error,
                version=version,
                epochs=epochs.get(t.job_id, []) if t.job_id else [],
            )  # fmt: skip
            for t, state, error, version in rows
        ]

    def page(self, *, limit: int, offset: int, state: StudyState | None = None) -> tuple[list[Study], int]:
        query = select(StudyRow)
        if state is not None:
            query = query.where(StudyRow.state == state)
        count = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = list(self.session.scalars(query.order_by(StudyRow.created_at.desc(), StudyRow.id).limit(limit).offset(offset)))
        ids = [r.id for r in rows]
        per_study = select(StudyTrialRow.study_id, func.count()).where(StudyTrialRow.study_id.in_(ids)).group_by(StudyTrialRow.study_id)
        counts: dict[uuid.UUID, int] = {sid: n for sid, n in self.session.execute(per_study)} if ids else {}
        return [_study(r, [], counts.get(r.id, 0)) for r in rows], count

    def needing_attention(self) -> list[uuid.UUID]:
        """Studies a coordinator pass may move on: every running one, and an ended one with a trial whose job ended
        unsettled (a cancelled study's trial that stopped after its worker died)."""
        unsettled = (
            select(StudyTrialRow.study_id)
            .join(JobRow, JobRow.id == StudyTrialRow.job_id)
            .where(StudyTrialRow.outcome.is_(None), JobRow.state.in_(sorted(FINAL)))
        )  # fmt: skip
        query = select(StudyRow.id).where((StudyRow.state == StudyState.RUNNING) | StudyRow.id.in_(unsettled))
        return list(self.session.scalars(query.order_by(StudyRow.created_at)))

    def any_running_using(self, dataset: str) -> bool:
        """Whether a running study's job template trains on `dataset`: its later trials would need it."""
        uses = StudyRow.spec[("job", "data", "dataset")].as_string() == dataset
        return bool(self.session.scalar(select(exists().where(StudyRow.state == StudyState.RUNNING, uses))))

    def add_trial(self, study_id: uuid.UUID, number: int, *, job_id: uuid.UUID | None, params: dict[str, Any],
                  system_attrs: dict[str, Any], outcome: str | None = None, error: str | None = None) -> None:  # fmt: skip
        """A new trial; a number the study already has fails here (IntegrityError), inside the caller's transaction."""
        self.session.add(StudyTrialRow(study_id=study_id, number=number, job_id=job_id, params=params, system_attrs=system_attrs,
                                       outcome=outcome, error=error, created_at=utcnow()))  # fmt: skip
        self.session.flush()

    def set_system_attrs(self, study_id: uuid.UUID, number: int, attrs: dict[str, Any]) -> None:
        self.session.execute(
            update(StudyTrialRow).where(StudyTrialRow.study_id == study_id, StudyTrialRow.number == number).values(system_attrs=attrs)
        )

    def settle(self, study_id: uuid.UUID, number: int, *, outcome: str, value: float | None = None) -> bool:
        """Record how a trial ended, once: False when its outcome was already written."""
        result = self.session.execute(
            update(StudyTrialRow)
            .where(StudyTrialRow.study_id == study_id, StudyTrialRow.number == number, StudyTrialRow.outcome.is_(None))
            .values(outcome=outcome, value=value)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def finish(self, study_id: uuid.UUID, *, state: StudyState, error: str | None = None, best_trial: int | None = None,
               best_version: int | None = None) -> bool:  # fmt: skip
        """running -> `state`, once."""
        result = self.session.execute(
            update(StudyRow)
            .where(StudyRow.id == study_id, StudyRow.state == StudyState.RUNNING)
            .values(state=state, error=error, best_trial=best_trial, best_version=best_version, finished_at=utcnow())
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def set_importances(self, study_id: uuid.UUID, importances: dict[str, float] | None) -> None:
        self.session.execute(update(StudyRow).where(StudyRow.id == study_id).values(importances=importances))
