"""The Celery app. Imports no torch and no tasks, so the API can send tasks by name through it."""

from __future__ import annotations

import uuid

from celery import Celery
from kombu import Exchange, Queue

from services.config import Settings
from worker import embedded_broker

RUN_JOB_TASK = "kiln.run_job"
QUEUES = ("cpu", "gpu")
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


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
            if app.settings.broker_url.startswith(AMQP_SCHEMES):
                return {queue: _amqp_ready(conn, prefix + queue) for queue in QUEUES}
            channel = conn.default_channel
            return {queue: int(channel._size(prefix + queue)) for queue in QUEUES}  # kombu's virtual transports
    except Exception:
        return {}


def _amqp_ready(conn: object, name: str) -> int:
    """A RabbitMQ queue's ready messages, by a passive declare on a channel of its own (a queue not yet declared by any
    worker closes that channel, and has none)."""
    channel = conn.channel()  # type: ignore[attr-defined]
    try:
        return int(channel.queue_declare(queue=name, passive=True).message_count)
    except Exception:
        return 0
    finally:
        try:
            channel.close()
        except Exception:
            pass


def create_celery(settings: Settings) -> KilnCelery:
    embedded_broker.install()  # sqla+ URLs: kombu's SQL transport, woken by each publish rather than polled once a second
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
        # A job keeps training through a broker outage (its lease is in SQL, not on the broker); Celery 6 would cancel it.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_soft_time_limit=settings.job_soft_time_limit_s,
        task_time_limit=settings.job_time_limit_s,
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Only Redis reads this.
        app.conf.broker_transport_options = {"visibility_timeout": settings.broker_visibility_timeout_s}
    elif settings.broker_url.startswith(AMQP_SCHEMES):
        # RabbitMQ: quorum queues (durable, replicated across a cluster's nodes, poison messages capped by the broker's
        # delivery limit) and publisher confirms, so a job the API answered 202 for is on the broker's disk. An unacked
        # message goes back to its queue the moment its consumer's connection drops: no visibility timeout to wait out.
        app.conf.task_queues = [
            Queue(settings.queue_prefix + name, Exchange(settings.queue_prefix + name, type="direct"),
                  routing_key=settings.queue_prefix + name, queue_arguments={"x-queue-type": "quorum"}, durable=True)
            for name in QUEUES
        ]  # fmt: skip
        app.conf.broker_transport_options = {"confirm_publish": True}
        app.conf.task_create_missing_queues = False
    elif settings.broker_url.startswith(("sqla+", "sqlalchemy+")):
        app.conf.broker_transport_options = {"polling_interval": settings.broker_poll_s}
    return app
