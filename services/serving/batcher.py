"""Dynamic batching: concurrent requests for one model merge into one onnxruntime run.

A request that finds the model idle yields to the event loop once, so requests that arrived with
it can join; if none did, it runs at once on the event loop, and a lone client pays no queue delay
and no thread hand-off. Otherwise requests queue up and run together (up to `max_batch_size`
rows) in the executor, after waiting at most `max_queue_delay_s` from the oldest one for the
batch to fill; requests that arrive during a run join the next one.

The rows a model holds (queued or running) are counted in a `QueueBudget` that all its batchers
share; a request that would take it past its limit is refused with `Overloaded` (a 503), so a flood
on one model never becomes an unbounded queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from services.errors import Overloaded

Feeds = dict[str, np.ndarray]
YIELD_STREAK = 32
PROBE_EVERY = 16
Runner = Callable[[Feeds], list[np.ndarray]]


@dataclass
class _Pending:
    feeds: Feeds
    rows: int
    future: asyncio.Future[tuple[list[np.ndarray], float, int]]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(eq=False)
class QueueBudget:
    """Rows queued or running for one model, shared by its batchers (one per input shape)."""

    limit: int  # KILN_MAX_QUEUED_ROWS
    rows: int = 0


@dataclass(frozen=True)
class BatchResult:
    outputs: list[np.ndarray]
    queue_s: float  # time spent waiting for a batch
    compute_s: float  # the onnxruntime run
    batch_rows: int  # rows in the run this request rode in


class DynamicBatcher:
    def __init__(self, run: Runner, *, max_batch_size: int, max_queue_delay_s: float, executor: Executor,
                 budget: QueueBudget | None = None) -> None:  # fmt: skip
        self.run, self.max_batch_size, self.max_queue_delay_s, self.executor = run, max_batch_size, max_queue_delay_s, executor
        self.budget = budget or QueueBudget(limit=2**62)
        self.last_used = time.monotonic()  # when a request last came: idle batchers are dropped (see Predictor)
        self._queue: deque[_Pending] = deque()
        self._busy = False
        # Yielding costs a loop turn (~10 us): after YIELD_STREAK idle turns in a row nobody joined,
        # only every PROBE_EVERY-th lone request yields, until one finds company again.
        self._lonely_streak = 0
        self._calls = 0

    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue

    async def submit(self, feeds: Feeds) -> BatchResult:
        """Run `feeds` with whatever else is queued, or raise Overloaded when the model's budget is spent.

        A request that finds nothing held is always taken, however many rows it has (the body limit caps it).
        """
        rows, budget = len(next(iter(feeds.values()))), self.budget
        if budget.rows and budget.rows + rows > budget.limit:
            raise Overloaded(f"this model already holds {budget.rows} rows in its queue (KILN_MAX_QUEUED_ROWS="
                             f"{budget.limit}): try again in a moment")  # fmt: skip
        budget.rows += rows
        self.last_used = time.monotonic()
        try:
            return await self._submit(feeds, rows)
        finally:
            budget.rows -= rows

    async def _submit(self, feeds: Feeds, rows: int) -> BatchResult:
        pending = _Pending(feeds, rows, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        if not self._busy:
            self._busy = True
            self._calls += 1
            try:
                if self._lonely_streak < YIELD_STREAK or self._calls % PROBE_EVERY == 0:
                    await asyncio.sleep(0)  # requests read in the same loop turn join the queue now
                    self._lonely_streak = self._lonely_streak + 1 if len(self._queue) == 1 else 0
            except BaseException:  # cancelled while holding the batcher: hand it on, never leave it busy
                self._queue.remove(pending)
                self._busy = False
                self._start_draining()
                raise
            if len(self._queue) == 1:  # alone: run here, no hand-off
                self._queue.popleft()
                try:
                    started = time.perf_counter()
                    outputs = self.run(feeds)
                    return BatchResult(outputs, 0.0, time.perf_counter() - started, rows)
                finally:
                    self._busy = False
                    self._start_draining()
            asyncio.get_running_loop().create_task(self._drain())
        outputs, compute_s, batch_rows = await pending.future
        return BatchResult(outputs, time.perf_counter() - pending.queued_at - compute_s, compute_s, batch_rows)

    def _start_draining(self) -> None:
        if not self._busy and self._queue:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._wait_to_fill()
                batch = self._take()
                await self._run_batch(batch)
        finally:
            self._busy = False
            if self._queue:  # arrivals between the last take and now
                self._start_draining()

    async def _wait_to_fill(self) -> None:
        deadline = self._queue[0].queued_at + self.max_queue_delay_s
        while sum(p.rows for p in self._queue) < self.max_batch_size and (left := deadline - time.perf_counter()) > 0:
            await asyncio.sleep(min(left, 0.0005))

    def _take(self) -> list[_Pending]:
        batch, rows = [self._queue.popleft()], 0
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self.max_batch_size:
            rows += self._queue[0].rows
            batch.append(self._queue.popleft())
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            feeds = {name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds}  # (sum B, ...)
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, feeds)
        except BaseException as exc:  # every request of the batch gets the error; none is left waiting
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("the batch was cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        compute_s, rows = time.perf_counter() - started, sum(p.rows for p in batch)
        offsets = np.cumsum([0, *(p.rows for p in batch)])
        for p, start, end in zip(batch, offsets[:-1], offsets[1:], strict=True):
            if not p.future.done():
                p.future.set_result(([o[start:end] for o in outputs], compute_s, rows))
