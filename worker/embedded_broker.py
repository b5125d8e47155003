"""The embedded broker: kombu's SQLAlchemy transport, woken through FIFOs rather than polled once a second.

kombu's virtual transports sleep `polling_interval` (1 s) after every empty poll, so a job posted to `make run` waited
half a second on average before it started. Here every publish, once its row has committed, writes a byte to each
consumer's FIFO in `<broker database>.wake/` (services/wakeups.py), and a consumer waits on its own FIFO (select, no
CPU) for up to the polling interval where kombu would sleep. The poll stays as the fallback: a lost wake-up costs one
interval, never a message. Messages, acks and redelivery are kombu's, unchanged.

`polling_interval` is a real transport option here (`KILN_BROKER_POLL_S`): kombu's own transport passes its options on
to `create_engine`, which refuses it.
"""

from __future__ import annotations

import time
from queue import Empty
from typing import Any

import kombu.transport
from kombu.transport import sqlalchemy
from sqlalchemy import create_engine

from services.wakeups import wake_folder, waker_for

# kombu's own options, which are not create_engine's (kombu's transport pops all but polling_interval)
KOMBU_OPTIONS = frozenset({"queue_tablename", "message_tablename", "callback", "errback", "max_retries", "interval_start",
                           "interval_step", "interval_max", "retry_errors", "polling_interval"})  # fmt: skip


class Channel(sqlalchemy.Channel):
    """kombu's SQLAlchemy channel that wakes the consumers after each publish."""

    connection: Transport

    def _engine_from_config(self) -> Any:
        conninfo: Any = self.connection.client
        options = {k: v for k, v in conninfo.transport_options.items() if k not in KOMBU_OPTIONS}
        return create_engine(conninfo.hostname, **options)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super()._put(queue, payload, **kwargs)  # committed: a consumer woken now finds the row
        self.connection.waker.wake_all()

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self.connection.waker.wake_self()  # prefetch 1: the next queued job may be taken now, not after the interval


class Transport(sqlalchemy.Transport):
    """kombu's SQLAlchemy transport, its empty polls waiting on a wake-up rather than sleeping."""

    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.waker = waker_for(wake_folder(client.hostname))

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        started = time.monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)  # type: ignore[attr-defined]
                return
            except Empty:
                left = None if timeout is None else timeout - (time.monotonic() - started)
                if left is not None and left <= 0:
                    raise TimeoutError() from None  # socket.timeout, which Celery's loop expects
                interval = self.polling_interval or 1.0
                self.waker.wait(interval if left is None else min(interval, left))


def install() -> None:
    """Make `sqla+…` broker URLs use this transport, in whichever process builds a Celery app."""
    for alias in ("sqla", "sqlalchemy"):
        kombu.transport.TRANSPORT_ALIASES[alias] = f"{__name__}:Transport"
        kombu.transport._transport_cache.pop(alias, None)  # resolved before, by name: resolve it again
