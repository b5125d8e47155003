"""Dynamic batching: concurrent requests for one model merge into one onnxruntime run.

A request that finds the model idle yields to the event loop once, so requests that arrived with
it can join; if none did, it runs at once, and a lone client pays no queue delay. Otherwise
requests queue up and run together (up to `max_batch_size` rows), after waiting at most
`max_queue_delay_s` from the oldest one for the batch to fill; requests that arrive during a run
join the next one.

Where a run goes depends on how long it is expected to take, from the runs this batcher has seen:
under `INLINE_BELOW_S` it runs on the event loop, since handing it to a thread and back costs the
loop more than the run itself (a one-row run of a small MLP takes ~7 us, the hand-off ~30 us, and
the GIL is fought over meanwhile); longer runs, and the first of each batcher, go to the executor,
where onnxruntime releases the GIL and the loop keeps reading requests. A run's cost is the CPU
time of the thread that ran it (Kiln's sessions run on one intra-op thread, services.serving.sessions),
which leaves out the wait for the GIL. Runs on a thread still look slower than they are (they share
the machine with the loop, on two vCPUs often one core's two hyperthreads), so the loop's own runs
decide: a batch size whose runs are expected to cost under `PROBE_BELOW_S` is tried on the loop once,
and every `PROBE_EVERY`-th run under that is tried again, so one slow outlier does not send it off for good.

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
INLINE_BELOW_S = 100e-6  # a run expected to be shorter stays on the event loop
PROBE_BELOW_S = 1e-3  # a run expected to be shorter may be tried on the event loop, to learn its cost there
LEARN = 0.2  # weight of the latest run in the running averages of run time and rows
Runner = Callable[[Feeds], list[np.ndarray]]


@dataclass
class _Pending:
    feeds: Feeds
    rows: int
    future: asyncio.Future[tuple[list[np.ndarray], float, int]]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Cost:
    """Running averages of runs' CPU seconds, by batch size rounded up to a power of two (a run's fixed cost is
    most of it on small models, so one size says little about another; fewer rows never cost more)."""

    by_size: dict[int, float] = field(default_factory=dict)  # rows.bit_length() -> seconds

    def learn(self, seconds: float, rows: int) -> None:
        size = rows.bit_length()
        known = self.by_size.get(size)
        self.by_size[size] = seconds if known is None else known + LEARN * (seconds - known)

    def tried(self, rows: int) -> bool:
        return rows.bit_length() in self.by_size

    def estimate(self, rows: int) -> float | None:
        """This size's average; else a larger size's (an upper bound); else a smaller one's, scaled up by rows; None if none ran."""
        size = rows.bit_length()
        if size in self.by_size:
            return self.by_size[size]
        larger = [s for s in self.by_size if s > size]
        if larger:
            return self.by_size[min(larger)]
        smaller = max(self.by_size, default=None)
        return None if smaller is None else self.by_size[smaller] * 2 ** (size - smaller)


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
        self._on_loop, self._on_thread = _Cost(), _Cost()  # what runs cost where they ran
        self._probes: dict[int, int] = {}  # by batch size: runs that might have been tried on the loop

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
            if len(self._queue) == 1:  # alone: run at once, with no wait for company; on the loop when short, no task
                self._queue.popleft()
                try:
                    on_loop = self._quick(rows)
                    if on_loop:
                        outputs, compute_s, cpu_s = self._timed(feeds)
                    else:
                        outputs, compute_s, cpu_s = await asyncio.get_running_loop().run_in_executor(self.executor, self._timed, feeds)
                    (self._on_loop if on_loop else self._on_thread).learn(cpu_s, rows)
                    return BatchResult(
                        outputs, time.perf_counter() - pending.queued_at - compute_s if not on_loop else 0.0, compute_s, rows
                    )
                finally:
                    self._busy = False
                    self._start_draining()
            asyncio.get_running_loop().create_task(self._drain())
        outputs, compute_s, batch_rows = await pending.future
        return BatchResult(outputs, time.perf_counter() - pending.queued_at - compute_s, compute_s, batch_rows)

    def _quick(self, rows: int) -> bool:
        """Whether to run `rows` rows on the event loop: known to take under INLINE_BELOW_S there, or worth a try (see
        above). Called once per run; each batch size counts its own probes."""
        on_loop = self._on_loop.estimate(rows)
        if on_loop is not None and on_loop < INLINE_BELOW_S:
            return True
        guesses = [g for g in (on_loop, self._on_thread.estimate(rows)) if g is not None]
        if not guesses or min(guesses) >= PROBE_BELOW_S:
            return False
        size = rows.bit_length()
        self._probes[size] = tries = self._probes.get(size, 0) + 1
        return not self._on_loop.tried(rows) or tries % PROBE_EVERY == 0

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
        rows = sum(p.rows for p in batch)
        try:
            feeds = {name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds}  # (sum B, ...)
            on_loop = self._quick(rows)
            if on_loop:
                outputs, compute_s, cpu_s = self._timed(feeds)
            else:
                outputs, compute_s, cpu_s = await asyncio.get_running_loop().run_in_executor(self.executor, self._timed, feeds)
        except BaseException as exc:  # every request of the batch gets the error; none is left waiting
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("the batch was cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        (self._on_loop if on_loop else self._on_thread).learn(cpu_s, rows)
        offsets = np.cumsum([0, *(p.rows for p in batch)])
        for p, start, end in zip(batch, offsets[:-1], offsets[1:], strict=True):
            if not p.future.done():
                p.future.set_result(([o[start:end] for o in outputs], compute_s, rows))
        if on_loop:
            await asyncio.sleep(0)  # a backlog run on the loop batch after batch still lets answers go out between them

    def _timed(self, feeds: Feeds) -> tuple[list[np.ndarray], float, float]:
        """The run, its duration and its CPU time, taken where it runs (a thread's hand-off is queueing, not compute)."""
        started, cpu = time.perf_counter(), time.thread_time()
        outputs = self.run(feeds)
        return outputs, time.perf_counter() - started, time.thread_time() - cpu
