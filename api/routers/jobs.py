"""`/v1/jobs`: submit a training job and follow it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ContextDep
from api.schemas import JobPublic, JobsPublic, JobSummary
from services.registry.entities import JobState
from services.spec import JobSpec
from services.usecases.jobs import cancel_job, epoch_image, get_job, list_jobs, submit_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def create_job(
    spec: JobSpec, ctx: ContextDep, response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=128, pattern=r"^[\x21-\x7e]+$")] = None,
) -> JobPublic:  # fmt: skip
    """Queue a training job; poll the `Location` it returns. A repeated `Idempotency-Key` with the same body returns the same job."""
    budget = ctx.settings.budget()
    job, created = submit_job(spec, uow_factory=ctx.uow_factory, dispatcher=ctx.dispatcher, budget=budget,
                              stale_after_s=ctx.settings.worker_stale_after_s, idempotency_key=idempotency_key)  # fmt: skip
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return JobPublic.of(job)


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def cancel(job_id: uuid.UUID, ctx: ContextDep) -> JobPublic:
    """Cancel a job: a queued one at once, a running one at its next batch (no version is registered)."""
    return JobPublic.of(cancel_job(job_id, uow_factory=ctx.uow_factory))


@router.get("", response_model=JobsPublic)
def read_jobs(
    ctx: ContextDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    state: JobState | None = None,
) -> JobsPublic:
    """Jobs, newest first."""
    jobs, count = list_jobs(uow_factory=ctx.uow_factory, limit=limit, offset=offset, state=state)
    return JobsPublic(data=[JobSummary.of(j) for j in jobs], count=count)


@router.get("/{job_id}", response_model=JobPublic)
def read_job(job_id: uuid.UUID, ctx: ContextDep) -> JobPublic:
    """One job: its state, current epoch, per-epoch history, error and resulting version."""
    return JobPublic.of(get_job(job_id, uow_factory=ctx.uow_factory))


FINAL_STATES = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def _event(name: str, data: object, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _resume_point(last_event_id: str | None) -> tuple[int, int, str | None]:
    """The last epoch and the number of warnings sent and the state last told, from a reconnecting client's Last-Event-ID
    (`<epoch>.<warnings>.<state>`, as each event's id is written); nothing sent for a missing or malformed one (a number
    past 9 digits too: no job has a billion epochs, and the epoch is compared in SQL, as an INTEGER)."""
    parts = (last_event_id or "").split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts[:2]):
        return 0, 0, None
    return int(parts[0]), int(parts[1]), parts[2] or None


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def stream_job_events(
    job_id: uuid.UUID, request: Request, ctx: ContextDep,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:  # fmt: skip
    """Server-Sent Events: `epoch` per finished epoch, `warning` per warning, `state` on each change, then `end` with the job;
    the stream then closes. Each event has an id; a client that reconnects with it as `Last-Event-ID` gets only what came
    after.

    Progress is read from SQL, so it works with any broker and any number of API replicas. A stream looks again as soon as
    the database says the job changed (PostgreSQL's NOTIFY, or on SQLite a wake-up from the writer), or every
    `KILN_EVENTS_POLL_S` otherwise.
    """
    await run_in_threadpool(get_job, job_id, uow_factory=ctx.uow_factory)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        sent, warned, state = _resume_point(last_event_id)
        follower = ctx.jobs.follow(job_id)  # before the first look: a change from then on wakes it
        try:
            while True:
                # Only the epochs not yet sent: a look costs the same at epoch 1000 as at epoch 1.
                job = await run_in_threadpool(get_job, job_id, uow_factory=ctx.uow_factory, history_after=sent)
                public = JobPublic.of(job)
                for epoch in public.history:
                    sent = epoch.epoch
                    yield _event("epoch", epoch.model_dump(), f"{sent}.{warned}.{state or ''}")
                for warning in public.warnings[warned:]:
                    warned += 1
                    yield _event("warning", warning.model_dump(), f"{sent}.{warned}.{state or ''}")
                if job.state != state:
                    state = job.state
                    yield _event("state", {"state": state, "error": job.error, "version": job.version}, f"{sent}.{warned}.{state}")
                if job.state in FINAL_STATES:
                    whole = await run_in_threadpool(get_job, job_id, uow_factory=ctx.uow_factory)  # its whole history
                    yield _event("end", JobPublic.of(whole).model_dump(mode="json"), f"{sent}.{warned}.{state}")
                    return
                if await request.is_disconnected():
                    return
                await follower.next_look(ctx.settings.events_poll_s)  # the job changed, or the poll's interval passed
        finally:
            ctx.jobs.leave(job_id, follower)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/epochs/{epoch}/image", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def read_epoch_image(job_id: uuid.UUID, epoch: Annotated[int, Path(ge=1, le=10_000)], ctx: ContextDep) -> Response:
    """A GAN's epoch: its generator's samples of the fixed latent batch, rendered as a PNG grid (the same z every epoch)."""
    image = epoch_image(job_id, epoch, uow_factory=ctx.uow_factory)
    return Response(image, media_type="image/png", headers={"Cache-Control": "max-age=86400, immutable"})
