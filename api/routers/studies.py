"""`/v1/studies`: hyperparameter searches whose trials are jobs."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ApiContext, ContextDep
from api.study_schemas import StudiesPublic, StudyPublic, StudySummary
from services.registry.entities import StudyState
from services.tuning.spec import StudySpec
from services.usecases.studies import StudyTerms, cancel_study, get_study, list_studies, submit_study

router = APIRouter(prefix="/v1/studies", tags=["studies"])


def _terms(ctx: ApiContext) -> StudyTerms:
    settings = ctx.settings
    return StudyTerms(uow_factory=ctx.uow_factory, dispatcher=ctx.dispatcher, stale_after_s=settings.worker_stale_after_s,
                      budget=settings.budget(),
                      count_trial=lambda outcome: ctx.metrics.study_trials.labels(outcome).inc())  # fmt: skip


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=StudyPublic)
def create_study(spec: StudySpec, ctx: ContextDep, response: Response) -> StudyPublic:
    """Start a study: every search-space path and range is checked against the job template, then its first
    `parallelism` trials are queued as jobs. Poll the `Location` it returns, or follow `/events`."""
    study = submit_study(spec, _terms(ctx))
    response.headers["Location"] = f"/v1/studies/{study.id}"
    return StudyPublic.of(study)


@router.get("", response_model=StudiesPublic)
def read_studies(
    ctx: ContextDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    state: StudyState | None = None,
) -> StudiesPublic:
    """Studies, newest first."""
    studies, count = list_studies(uow_factory=ctx.uow_factory, limit=limit, offset=offset, state=state)
    return StudiesPublic(data=[StudySummary.of(s) for s in studies], count=count)


@router.get("/{study_id}", response_model=StudyPublic)
def read_study(study_id: uuid.UUID, ctx: ContextDep) -> StudyPublic:
    """A study: its state, every trial (values, state, objective, epochs, version), the best trial and parameter importances."""
    return StudyPublic.of(get_study(study_id, uow_factory=ctx.uow_factory))


@router.post("/{study_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=StudyPublic)
def cancel(study_id: uuid.UUID, ctx: ContextDep) -> StudyPublic:
    """Stop a study: queued trials are cancelled at once, running ones at their next batch; no alias is moved."""
    return StudyPublic.of(cancel_study(study_id, _terms(ctx)))


def _event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.get("/{study_id}/events", response_class=StreamingResponse)
async def stream_study_events(study_id: uuid.UUID, request: Request, ctx: ContextDep) -> StreamingResponse:
    """Server-Sent Events: `trial` whenever a trial starts or changes state (with its value), `state` on each change of the
    study's, then `end` with the whole study; the stream then closes."""
    await run_in_threadpool(get_study, study_id, uow_factory=ctx.uow_factory)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        seen: dict[int, tuple[str, float | None]] = {}
        state = None
        while True:
            public = StudyPublic.of(await run_in_threadpool(get_study, study_id, uow_factory=ctx.uow_factory))
            for trial in public.trials:
                if seen.get(trial.number) != (trial.state, trial.value):
                    seen[trial.number] = (trial.state, trial.value)
                    yield _event("trial", trial.model_dump(mode="json"))
            if public.state != state:
                state = public.state
                yield _event("state", {"state": state, "error": public.error, "best_trial": public.best_trial})
            if public.state != StudyState.RUNNING:
                yield _event("end", public.model_dump(mode="json"))
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(ctx.settings.events_poll_s)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
