"""What keeps one attempt of a job honest: its lease, renewed by a heartbeat, and the cancel it watches for."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.registry.protocols import UowFactory

if TYPE_CHECKING:
    from services.usecases.training import WorkerContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTerms:
    heartbeat_s: float = 5.0  # how often a running attempt renews its claim
    lease_s: float = 6 * 3600 + 1800  # the longest an attempt may hold a job, whatever its heartbeat
    max_attempts: int = 3  # KILN_MAX_ATTEMPTS: a multi-process job whose training processes die this often fails


class LeaseLost(RuntimeError):
    """The sweeper gave this attempt's job to another attempt (or it ended): stop, and write nothing."""


class JobLease:
    """Renews an attempt's claim every `heartbeat_s` from a thread, and remembers when the claim is gone.

    Every write an attempt makes is conditioned on its attempt number (a fencing token), so a worker
    that was wrongly presumed dead and wakes up can change nothing; this only makes it stop early.
    """

    def __init__(self, job_id: uuid.UUID, attempt: int, ctx: WorkerContext) -> None:
        self.job_id, self.attempt, self.ctx = job_id, attempt, ctx
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kiln-lease-{job_id}", daemon=True)

    def __enter__(self) -> JobLease:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.ctx.lease.heartbeat_s):
            try:
                with self.ctx.uow_factory() as uow:
                    held = uow.jobs.heartbeat(self.job_id, self.attempt)
                    uow.commit()
            except Exception:  # the database is away: try again next beat; the sweeper allows several
                log.warning("job %s heartbeat failed; retrying", self.job_id, exc_info=True)
                continue
            if not held:
                self.lost.set()
                return


class CancelWatch:
    """Whether the job was cancelled, read from SQL at most every `every_s` seconds (it is asked every batch)."""

    def __init__(self, job_id: uuid.UUID, uow_factory: UowFactory, every_s: float = 0.5) -> None:
        self.job_id, self.uow_factory, self.every_s = job_id, uow_factory, every_s
        self._checked, self._cancelled = -float("inf"), False

    def __call__(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._checked >= self.every_s:
            self._checked = now
            with self.uow_factory() as uow:
                self._cancelled = uow.jobs.cancel_requested(self.job_id)
        return self._cancelled
