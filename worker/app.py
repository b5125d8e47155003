"""The Celery app. Imports no torch and no tasks, so the API can send tasks by name through it."""

from __future__ import annotations

import uuid

from celery import Celery

from services.config import Settings

RUN_JOB_TASK = "kiln.run_job"


class KilnCelery(Celery):
    """A Celery app that carries the Settings it was built from."""

    settings: Settings


class CeleryDispatcher:
    """Sends jobs to workers by task name; the API never imports the task code."""

    def __init__(self, celery: KilnCelery) -> None:
        self.celery = celery

    def send(self, job_id: uuid.UUID, *, queue: str) -> None:
        self.celery.send_task(RUN_JOB_TASK, args=[str(job_id)], queue=self.celery.settings.queue_prefix + queue)


def queue_lengths(app: KilnCelery) -> dict[str, int]:
    """Messages waiting in the cpu and gpu queues (empty when the broker cannot be asked)."""
    prefix = app.settings.queue_prefix
    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            return {queue: int(channel._size(prefix + queue)) for queue in ("cpu", "gpu")}  # kombu's virtual transports
    except Exception:
        return {}


def create_celery(settings: Settings) -> KilnCelery:
    app = KilnCelery("kiln", broker=settings.broker_url, include=["worker.tasks"], set_as_current=False)
    app.settings = settings
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_default_queue=f"{settings.queue_prefix}cpu",
        # A job runs for minutes: take one message at a time and acknowledge it only when done.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A pool child warms torch up before it reports ready; Celery's 4 s default is too tight.
        worker_proc_alive_timeout=60,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_soft_time_limit=settings.job_soft_time_limit_s,
        task_time_limit=settings.job_time_limit_s,
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Only Redis reads this; kombu's SQLAlchemy transport passes its options on to create_engine.
        app.conf.broker_transport_options = {"visibility_timeout": settings.broker_visibility_timeout_s}
    return app
