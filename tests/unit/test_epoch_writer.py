"""Epoch writes behind training: in order, bounded, and the first failure stops the rest and reaches the training thread."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from services.training.epoch_writer import EpochWriter


def test_writes_run_in_the_order_given_and_flush_waits_for_them() -> None:
    done: list[int] = []
    with EpochWriter() as writer:
        for n in range(20):
            writer.submit(lambda n=n: done.append(n))
        writer.flush()
        assert done == list(range(20))


def test_the_first_failure_stops_every_later_write_and_is_raised_at_the_next_submit_or_flush() -> None:
    done: list[str] = []

    def fail() -> None:
        raise ConnectionError("the registry went away")

    with EpochWriter() as writer:
        writer.submit(lambda: done.append("checkpoint 1"))
        writer.submit(fail)
        writer.submit(lambda: done.append("record 2"))  # queued behind the failure: never run
        with pytest.raises(ConnectionError, match="went away"):
            writer.flush()
        with pytest.raises(ConnectionError):
            writer.submit(lambda: done.append("checkpoint 3"))
    assert done == ["checkpoint 1"]


def test_training_waits_once_depth_writes_are_pending() -> None:
    release, started = threading.Event(), threading.Event()
    writer = EpochWriter(depth=1)
    writer.submit(lambda: (started.set(), release.wait(30)))  # running: holds the thread
    assert started.wait(30)
    writer.submit(lambda: None)  # waiting: fills the queue
    blocked = threading.Thread(target=writer.submit, args=(lambda: None,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # a third write waits for room
    release.set()
    blocked.join(30)
    assert not blocked.is_alive()
    writer.close()


def test_leaving_on_an_error_still_runs_what_was_queued() -> None:
    done: list[int] = []
    with pytest.raises(KeyboardInterrupt), EpochWriter() as writer:
        writer.submit(lambda: done.append(1))
        raise KeyboardInterrupt  # training stopped: the epochs it trained are still written
    assert done == [1]


class SoftLimit(Exception):
    """As Celery's SoftTimeLimitExceeded: raised by a signal handler in the training thread, wherever it is."""


def test_a_signal_during_close_is_raised_only_once_the_writes_are_done() -> None:
    done: list[str] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(SoftLimit()))
    try:
        writer = EpochWriter()
        writer.submit(lambda: (time.sleep(0.5), done.append("record")))
        signal.setitimer(signal.ITIMER_REAL, 0.1)  # lands while close() waits for the write
        with pytest.raises(SoftLimit):
            writer.close()
        assert done == ["record"]  # nothing is written after the job has ended
        assert writer._done.is_set()  # and the thread has stopped
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
