"""Each broker gets the settings its guarantees need: RabbitMQ quorum queues with publisher confirms, Redis its
visibility timeout, the embedded SQLite transport its fallback poll (a transport option of worker/embedded_broker.py,
never passed to create_engine)."""

from __future__ import annotations

from services.config import Settings
from worker.app import create_celery


def test_rabbitmq_gets_quorum_queues_and_publisher_confirms() -> None:
    app = create_celery(Settings(broker_url="amqp://guest:guest@127.0.0.1:5672//", queue_prefix="p-"))
    queues = {q.name: q for q in app.conf.task_queues}
    assert set(queues) == {"p-cpu", "p-gpu"}
    for name, queue in queues.items():
        assert queue.queue_arguments == {"x-queue-type": "quorum"} and queue.durable
        assert queue.exchange.name == name and queue.routing_key == name
    assert app.conf.broker_transport_options == {"confirm_publish": True}
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost and app.conf.worker_prefetch_multiplier == 1
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is False  # a broker outage cancels no training


def test_redis_keeps_its_visibility_timeout_and_sqlite_gets_its_polling_interval() -> None:
    redis = create_celery(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert redis.conf.broker_transport_options == {"visibility_timeout": Settings().broker_visibility_timeout_s}
    assert not redis.conf.task_queues
    sqlite = create_celery(Settings(broker_url="sqla+sqlite:////tmp/broker.db"))
    assert sqlite.conf.broker_transport_options == {"polling_interval": Settings().broker_poll_s}
    assert not sqlite.conf.task_queues
    slower = create_celery(Settings(broker_url="sqlalchemy+sqlite:////tmp/broker.db", broker_poll_s=5))
    assert slower.conf.broker_transport_options == {"polling_interval": 5}
