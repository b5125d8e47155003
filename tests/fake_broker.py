"""The broker and submission for use-case tests on the in-memory registry (tests/fakes.py)."""

from __future__ import annotations

import uuid

from services.spec import Budget, JobSpec
from services.usecases.jobs import submit_job
from tests.factories import tiny_job
from tests.fakes import FakeRegistry

BUDGET = Budget(max_parameters=100_000_000, max_training_memory_mb=4096)


class Recorder:
    """The broker: what was sent, and whether the job was already committed when it was."""

    def __init__(self, registry: FakeRegistry, *, fail: bool = False) -> None:
        self.registry, self.fail = registry, fail
        self.sent: list[tuple[uuid.UUID, str]] = []
        self.committed_when_sent: list[bool] = []

    def send(self, job_id: uuid.UUID, *, queue: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.committed_when_sent.append(job_id in self.registry.committed.jobs)
        self.sent.append((job_id, queue))


def submit(registry: FakeRegistry, body: dict | None = None, *, key: str | None = None, dispatcher: Recorder | None = None):
    return submit_job(JobSpec.model_validate(body or tiny_job()), uow_factory=registry.uow_factory,
                      dispatcher=dispatcher or Recorder(registry), stale_after_s=30, budget=BUDGET, idempotency_key=key)  # fmt: skip
