"""The embedded broker: kombu's SQLAlchemy transport on a real SQLite file, its consumers woken by each publish and ack
rather than polled (worker/embedded_broker.py). The poll here is 30 s: whatever arrives sooner came by a wake-up."""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from services.config import Settings
from worker import embedded_broker
from worker.app import create_celery

POLL = {"polling_interval": 30}
SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: no engine, FIFO or kombu state of this one's


@pytest.fixture
def url(tmp_path: Path) -> str:
    embedded_broker.install()
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with Connection(url, transport_options=POLL) as conn:
        conn.SimpleQueue("jobs").close()  # the tables and the queue exist before any consumer starts
    return url


def _queue(name: str = "jobs") -> Queue:
    return Queue(name, Exchange(name), routing_key=name)  # as kombu's SimpleQueue declares it


def _publish(url: str, body: dict[str, Any], name: str = "jobs") -> None:
    """Through a connection of its own, as the API publishes a job."""
    with Connection(url, transport_options=POLL) as conn:
        Producer(conn.default_channel).publish(body, exchange=name, routing_key=name, declare=[_queue(name)], serializer="json")


def _consume_one(url: str, out: Pipe) -> None:
    """A consumer process: one empty poll (its FIFO made), "ready", then one drain of up to 60 s; reports what came."""
    embedded_broker.install()
    got: list[Any] = []

    def on_message(body: Any, message: Message) -> None:
        got.append(body)
        message.ack()

    with Connection(url, transport_options=POLL) as conn, Consumer(conn, [_queue()], callbacks=[on_message], accept=["json"]):
        try:
            conn.drain_events(timeout=0.5)
        except TimeoutError:
            pass
        out.send("ready")
        while not got:
            conn.drain_events(timeout=60)  # twice the poll: only a wake-up ends it sooner than 30 s
    out.send(got)


def _start_consumer(url: str) -> tuple[multiprocessing.process.BaseProcess, Pipe]:
    ours, theirs = SPAWN.Pipe()
    child = SPAWN.Process(target=_consume_one, args=(url, theirs), daemon=True)
    child.start()
    assert ours.poll(60) and ours.recv() == "ready", "the consumer never started"
    time.sleep(0.3)  # into its wait
    return child, ours


def test_polling_interval_is_a_transport_option_not_an_engine_argument(url: str) -> None:
    with Connection(url, transport_options=POLL) as conn:
        assert isinstance(conn.transport, embedded_broker.Transport)
        assert conn.transport.polling_interval == 30
        queue = conn.SimpleQueue("jobs")  # create_engine ran: kombu's own transport would have raised a TypeError here
        queue.put({"n": 1})
        assert queue.get(timeout=5).payload == {"n": 1}
        queue.close()
    with Connection(url.replace("sqla+", "sqlalchemy+", 1)) as conn:
        assert isinstance(conn.transport, embedded_broker.Transport)


def test_a_publish_wakes_a_consumer_waiting_in_another_process(url: str) -> None:
    child, said = _start_consumer(url)
    try:
        assert not said.poll(0)
        published = time.monotonic()
        _publish(url, {"job": "a"})
        assert said.poll(10), "the consumer slept on: the publish never woke it"  # well under the 30 s poll
        print(f"\n[embedded broker] cross-process pickup {time.monotonic() - published:.3f}s")
        assert said.recv() == [{"job": "a"}]
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


def test_a_drain_with_nothing_published_waits_out_its_timeout(url: str) -> None:
    with Connection(url, transport_options=POLL) as conn, Consumer(conn, [_queue()], callbacks=[], accept=["json"]):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.5)  # shorter than the poll: the timeout bounds the wait
        assert 0.45 <= time.monotonic() - started < 10


class HeldConsumer:
    """A consumer with prefetch 1 that never acks on its own, draining in a thread as Celery's consumer does while its
    pool's result thread acks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = Connection(url, transport_options=POLL)
        self.messages: list[Message] = []
        self.arrived = threading.Condition()
        self.consumer = Consumer(self.conn, [_queue()], callbacks=[self._on_message], accept=["json"], prefetch_count=1)
        self.consumer.consume()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _on_message(self, _body: Any, message: Message) -> None:
        with self.arrived:
            self.messages.append(message)
            self.arrived.notify_all()

    def _drain(self) -> None:
        while not self.stop.is_set():
            try:
                self.conn.drain_events(timeout=60)  # twice the poll
            except TimeoutError:
                pass

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)

    def close(self) -> None:
        self.stop.set()
        for message in self.messages:
            if not message.acknowledged:
                message.ack()
        _publish(self.url, {"stop": True})  # a delivery ends the drain (a wake-up alone only ends one wait inside it)
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.conn.release()


def test_prefetch_one_holds_the_next_message_until_the_ack_which_wakes_the_consumer(url: str) -> None:
    held = HeldConsumer(url)
    try:
        _publish(url, {"n": 1})
        assert held.wait_for(1, 10), "the first message never came"
        _publish(url, {"n": 2})  # the publish wakes it too, but it may not take a second one yet
        assert not held.wait_for(2, 1.0)
        assert [m.payload for m in held.messages] == [{"n": 1}]
        acked = time.monotonic()
        held.messages[0].ack()  # from this thread, while the consumer waits in drain_events
        assert held.wait_for(2, 10), "the ack did not wake the consumer: it waited for the 30 s poll"
        print(f"\n[embedded broker] next message after the ack {time.monotonic() - acked:.3f}s")
        assert [m.payload for m in held.messages] == [{"n": 1}, {"n": 2}]
    finally:
        held.close()


def test_a_message_held_unacked_by_a_consumer_that_closes_goes_to_a_waiting_one(url: str) -> None:
    _publish(url, {"job": "held"})
    first = Connection(url, transport_options=POLL)
    held: list[Message] = []
    with Consumer(first, [_queue()], callbacks=[lambda _body, message: held.append(message)], accept=["json"], prefetch_count=1):
        first.drain_events(timeout=10)
        assert [m.payload for m in held] == [{"job": "held"}]
        child, said = _start_consumer(url)  # it finds the queue empty: the message is the first consumer's
        try:
            assert not said.poll(0.5)
            closed = time.monotonic()
            first.release()  # kombu puts an unacked message back on close, and that publish wakes the other consumer
            assert said.poll(10), "the restored message waited for the 30 s poll"
            print(f"\n[embedded broker] redelivery after close {time.monotonic() - closed:.3f}s")
            assert said.recv() == [{"job": "held"}]  # put back as a new row: the consumer that closed held it
        finally:
            child.join(10)
            if child.is_alive():
                child.kill()


def test_create_celery_makes_the_broker_poll_a_transport_option_of_the_embedded_broker(tmp_path: Path) -> None:
    app = create_celery(Settings(broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}", broker_poll_s=7.5))
    assert app.conf.broker_transport_options == {"polling_interval": 7.5}
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        assert isinstance(conn.transport, embedded_broker.Transport) and conn.transport.polling_interval == 7.5
        assert conn.default_channel._size("kiln-cpu") == 0  # the engine was made: the option did not reach it
