"""A job's event stream answers when the job changes, not at its next poll: with the poll set to 30 s, a job that trains
in a second or two is followed to its end in well under 30 s, every epoch in order, on both stacks (PostgreSQL's NOTIFY
from the worker's writes; on the embedded defaults, the worker's commits waking the API through FIFOs)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.e2e.helpers import check_event_stream, job_events
from tests.factories import tiny_job

POLL_S = "30"  # the fallback poll: an answer that waited for it would take 30 s


@pytest.mark.parametrize("stack", ["embedded", "postgres+redis"])
def test_an_event_stream_follows_a_job_as_it_changes_not_at_its_poll(stack_on, tmp_path: Path, stack: str) -> None:
    if stack == "embedded":
        running = stack_on(f"sqla+sqlite:///{tmp_path / 'broker.db'}", f"sqlite:///{tmp_path / 'kiln.db'}", events_poll_s=POLL_S)
    else:
        running = stack_on(REDIS_URL, events_poll_s=POLL_S)
    running.start_worker()
    with httpx.Client(base_url=running.url, headers=running.headers, timeout=30) as client:
        for _ in range(2):  # the second after the stream's listener has certainly connected, too
            started = time.monotonic()
            job = client.post("/v1/jobs", json=tiny_job(training={"epochs": 5})).json()
            events = job_events(running.url, job["id"], running.headers, timeout=60)
            followed = time.monotonic() - started
            check_event_stream(events, epochs=5)
            assert followed < 20, f"followed in {followed:.1f} s: the stream waited for its {POLL_S} s poll\n{running.logs()}"
