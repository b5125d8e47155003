"""On the embedded stack as `make run` starts it, a job starts as soon as it is posted and the next one as soon as the
worker is free: the SQLite broker wakes its worker on each publish and each ack, rather than leaving it to its poll.

The poll here is 30 s, but Celery's worker loop ends every drain after 2 s on any transport, so kombu's stock transport
would take up to 2 s, not 30: a job posted right after the last one finished waits about 2 s less that job's run time.
Hence the bound of 1 s, far above the tens of milliseconds a wake-up takes and below what polling alone gives.
"""

from __future__ import annotations

import signal
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import start_make_run, stop, wait_for_job
from tests.factories import tiny_job

WAKE_BOUND_S = 1.0  # see the module's docstring


@dataclass
class Embedded:
    client: httpx.Client
    var: Path
    log: Path
    first: dict[str, Any] | None = None  # the first job posted once `make run` said it was ready

    def run(self, *model_names: str) -> list[dict[str, Any]]:
        """Post a tiny job for each name, back to back, then wait for them all to finish."""
        locations = []
        for name in model_names:
            response = self.client.post("/v1/jobs", json=tiny_job(model_name=name))
            assert response.status_code == 202, response.text
            locations.append(response.headers["location"])
        jobs = [wait_for_job(self.client, location) for location in locations]
        assert all(job["state"] == "succeeded" for job in jobs), [job["error"] for job in jobs]
        return jobs


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """`make run` with a 30 s fallback poll and its one worker process, shared by this module's tests."""
    var = tmp_path_factory.mktemp("pickup") / "var"
    log = var.parent / "run.log"
    proc, url = start_make_run(var, log, broker_poll_s="30")
    headers = {"Authorization": f"Bearer {(var / 'api-key').read_text().strip()}"}
    try:
        with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
            stack = Embedded(client, var, log)
            (stack.first,) = stack.run("first")
            yield stack
    finally:
        assert stop(proc, sig=signal.SIGINT, timeout=120) == 0, log.read_text()[-3000:]


def _at(job: dict[str, Any], field: str) -> datetime:
    assert job[field], f"{field} unset: {job}"
    return datetime.fromisoformat(job[field])


def test_the_worker_listens_for_wake_ups_on_a_fifo_beside_the_broker_database(embedded: Embedded) -> None:
    folder = embedded.var / "broker.db.wake"
    listening = [p for p in folder.iterdir() if stat.S_ISFIFO(p.lstat().st_mode) and not p.name.startswith(".")]
    assert len(listening) == 1, sorted(p.name for p in folder.iterdir())  # the worker's consumer; publishers make none


def test_the_first_job_after_ready_starts_at_once_the_worker_being_announced_only_once_warm(embedded: Embedded) -> None:
    """The worker's row (what /readyz and `make run`'s "Kiln is running" wait for) is written by its pool child after the
    torch warm-up, not when Celery says ready: a job posted at once does not wait out the warm-up (about 2 s here)."""
    assert embedded.first is not None
    waited = (_at(embedded.first, "started_at") - _at(embedded.first, "created_at")).total_seconds()
    print(f"\n[embedded pickup] first job after ready: posted -> started {waited:.3f}s")
    assert waited < WAKE_BOUND_S, f"waited {waited:.3f}s:\n{embedded.log.read_text()[-3000:]}"


def test_a_posted_job_starts_at_once_and_succeeds(embedded: Embedded) -> None:
    (job,) = embedded.run("pickup")
    waited = (_at(job, "started_at") - _at(job, "created_at")).total_seconds()
    print(f"\n[embedded pickup] posted -> started {waited:.3f}s")
    assert waited < WAKE_BOUND_S, f"waited {waited:.3f}s:\n{embedded.log.read_text()[-3000:]}"


def test_the_next_job_starts_as_soon_as_the_worker_acks_the_one_before(embedded: Embedded) -> None:
    first, second = embedded.run("back-to-back", "back-to-back")  # one worker process, prefetch 1: one at a time
    assert _at(second, "started_at") >= _at(first, "finished_at")  # taken only once the first was done
    waited = (_at(second, "started_at") - _at(first, "finished_at")).total_seconds()
    print(f"\n[embedded pickup] first finished -> second started {waited:.3f}s")
    assert waited < WAKE_BOUND_S, f"waited {waited:.3f}s:\n{embedded.log.read_text()[-3000:]}"
