"""Dynamic batching: a lone request runs at once; concurrent ones share a run and get their own rows back."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.errors import Overloaded, Unavailable
from services.serving.batcher import BatchResult, DynamicBatcher, QueueBudget

LEARNING_RUNS = 10


class SlowDouble:
    """Doubles its input after a pause (slept, or `busy` computing, as onnxruntime does), recording the batch sizes it was run with."""

    def __init__(self, pause_s: float, *, busy: bool = False) -> None:
        self.pause_s, self.busy, self.batches, self.threads = pause_s, busy, [], set()

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.batches.append(len(feeds["x"]))
        self.threads.add(threading.current_thread().name)
        if self.busy:
            started = time.thread_time()
            while time.thread_time() - started < self.pause_s:
                pass
        elif self.pause_s:
            time.sleep(self.pause_s)
        return [feeds["x"] * 2]


def _batcher(run: SlowDouble, **options: float) -> DynamicBatcher:
    kwargs = {"max_batch_size": 64, "max_queue_delay_s": 0.0} | options
    return DynamicBatcher(run, executor=ThreadPoolExecutor(2), **kwargs)  # type: ignore[arg-type]


def test_a_lone_request_runs_at_once_on_the_calling_thread_once_runs_are_known_to_be_short() -> None:
    run, here = SlowDouble(0.0), threading.current_thread().name
    batcher = _batcher(run)

    async def main() -> list[BatchResult]:
        first = await batcher.submit({"x": np.ones((3, 2), np.float32)})
        assert run.threads - {here}  # the first run's cost is unknown: the executor's thread took it
        for _ in range(LEARNING_RUNS):  # what a run costs is learnt from a few (a thread's first is slow)
            await batcher.submit({"x": np.ones((3, 2), np.float32)})
        run.threads.clear()
        return [first] + [await batcher.submit({"x": np.ones((3, 2), np.float32)}) for _ in range(3)]

    first, *later = asyncio.run(main())
    for result in later:
        assert result.batch_rows == 3 and result.queue_s == 0.0
        np.testing.assert_array_equal(result.outputs[0], np.full((3, 2), 2.0))
    assert run.threads == {here}
    np.testing.assert_array_equal(first.outputs[0], np.full((3, 2), 2.0))


def test_long_runs_stay_off_the_event_loop_and_short_batches_stay_on_it() -> None:
    here = threading.current_thread().name
    for pause_s, on_loop in ((0.005, False), (0.0, True)):  # 5 ms of CPU is far over INLINE_BELOW_S; a bare multiply far under
        run = SlowDouble(pause_s, busy=True)
        batcher = _batcher(run)

        async def main(run: SlowDouble = run, batcher: DynamicBatcher = batcher) -> None:
            for _ in range(LEARNING_RUNS):  # learns what a run costs
                await batcher.submit({"x": np.ones((1, 2), np.float32)})
            run.threads.clear()
            for _ in range(3):
                await batcher.submit({"x": np.ones((1, 2), np.float32)})  # alone
                await asyncio.gather(*(batcher.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(8)))  # batched

        asyncio.run(main())
        assert len(run.batches) < LEARNING_RUNS + 3 * 9  # some merged
        assert (run.threads == {here}) if on_loop else (here not in run.threads), (pause_s, run.threads)


def test_concurrent_requests_share_runs_and_get_their_own_rows_in_order() -> None:
    run = SlowDouble(0.02)
    batcher = _batcher(run)

    async def main() -> list:
        return await asyncio.gather(*(batcher.submit({"x": np.full((i % 3 + 1, 2), float(i), np.float32)}) for i in range(20)))

    results = asyncio.run(main())
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.outputs[0], np.full((i % 3 + 1, 2), 2.0 * i))
    assert len(run.batches) < 20 and max(run.batches) > 3  # merged
    assert sum(run.batches) == sum(i % 3 + 1 for i in range(20))
    assert max(r.batch_rows for r in results) == max(run.batches)


def test_batches_never_exceed_the_maximum() -> None:
    run = SlowDouble(0.01)
    batcher = _batcher(run, max_batch_size=4)

    async def main() -> None:
        await asyncio.gather(*(batcher.submit({"x": np.ones((1, 1), np.float32)}) for _ in range(30)))

    asyncio.run(main())
    assert max(run.batches) <= 4 and sum(run.batches) == 30


def test_queue_delay_lets_a_batch_fill() -> None:
    run = SlowDouble(0.0)
    # A delay far longer than the late arrival takes, on a loaded machine too; the batch runs as soon as it is full.
    batcher = _batcher(run, max_queue_delay_s=30.0, max_batch_size=3)
    one = {"x": np.ones((1, 1), np.float32)}

    async def late() -> object:
        await asyncio.sleep(0.01)  # after the first two have started waiting
        return await batcher.submit(one)

    async def main() -> None:
        await asyncio.gather(batcher.submit(one), batcher.submit(one), late())

    started = time.monotonic()
    asyncio.run(main())
    assert run.batches == [3]  # two arrived together, and waited for the third
    assert time.monotonic() - started < 30.0  # it ran when full, not at the deadline


def test_a_failing_run_fails_every_request_in_its_batch() -> None:
    def broken(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        time.sleep(0.01)
        raise RuntimeError("onnxruntime said no")

    batcher = DynamicBatcher(broken, max_batch_size=8, max_queue_delay_s=0.0, executor=ThreadPoolExecutor(1))

    async def main() -> list:
        return await asyncio.gather(*(batcher.submit({"x": np.ones((1, 1))}) for _ in range(4)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_after_a_long_lonely_spell_a_burst_is_still_batched() -> None:
    run = SlowDouble(0.001)
    batcher = _batcher(run)
    one = {"x": np.ones((1, 1), np.float32)}

    async def main() -> None:
        for _ in range(100):  # one client at a time: the batcher stops yielding for them
            await batcher.submit(one)
        run.batches.clear()
        await asyncio.gather(*(batcher.submit(one) for _ in range(40)))

    asyncio.run(main())
    assert sum(run.batches) == 40 and max(run.batches) > 1  # an occasional probe finds the crowd


class Gated:
    """Doubles its input once `gate` is set, so a test decides when a run ends; `started` says one began."""

    def __init__(self) -> None:
        self.gate, self.started = threading.Event(), threading.Event()

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.started.set()
        if not self.gate.wait(10):
            raise RuntimeError("the test never opened the gate")
        return [feeds["x"] * 2]


async def _held(batcher: DynamicBatcher, run: Gated, *row_counts: int) -> list[asyncio.Task[BatchResult]]:
    """Requests submitted together (so they run on the executor, not the loop) and held there by the gate."""
    held = [asyncio.ensure_future(batcher.submit({"x": np.ones((n, 1), np.float32)})) for n in row_counts]
    while not run.started.is_set():
        await asyncio.sleep(0)
    return held


def test_a_model_holding_its_limit_refuses_more_until_it_drains() -> None:
    run, budget = Gated(), QueueBudget(limit=4)
    batcher = DynamicBatcher(run, max_batch_size=64, max_queue_delay_s=0.0, executor=ThreadPoolExecutor(1), budget=budget)

    async def main() -> None:
        held = await _held(batcher, run, 2, 2)
        assert budget.rows == 4
        with pytest.raises(Overloaded, match="KILN_MAX_QUEUED_ROWS=4") as refused:
            await batcher.submit({"x": np.ones((1, 1), np.float32)})
        assert isinstance(refused.value, Unavailable) and refused.value.code == "overloaded" and refused.value.retry_after_s >= 1
        run.gate.set()
        assert [r.batch_rows for r in await asyncio.gather(*held)] == [4, 4]
        assert budget.rows == 0 and batcher.idle
        assert (await batcher.submit({"x": np.ones((3, 1), np.float32)})).batch_rows == 3  # taken again once drained

    asyncio.run(main())


def test_a_request_over_the_limit_is_taken_when_nothing_is_held() -> None:
    batcher = _batcher(SlowDouble(0.0))
    batcher.budget.limit = 2
    result = asyncio.run(batcher.submit({"x": np.ones((5, 1), np.float32)}))
    assert result.batch_rows == 5 and batcher.budget.rows == 0


def test_batchers_sharing_a_budget_count_each_others_rows() -> None:
    run, budget = Gated(), QueueBudget(limit=3)
    pool = ThreadPoolExecutor(1)
    wide, narrow = (DynamicBatcher(run, max_batch_size=64, max_queue_delay_s=0.0, executor=pool, budget=budget) for _ in range(2))

    async def main() -> None:
        held = await _held(wide, run, 1, 2)
        with pytest.raises(Overloaded):
            await narrow.submit({"x": np.ones((1, 1), np.float32)})
        run.gate.set()
        await asyncio.gather(*held)
        assert budget.rows == 0

    asyncio.run(main())


def test_a_cancelled_request_gives_its_rows_back() -> None:
    run, budget = Gated(), QueueBudget(limit=10)
    batcher = DynamicBatcher(run, max_batch_size=64, max_queue_delay_s=0.0, executor=ThreadPoolExecutor(1), budget=budget)

    async def main() -> None:
        held = await _held(batcher, run, 3, 3)
        for request in held:
            request.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        assert budget.rows == 0
        run.gate.set()

    asyncio.run(main())


def test_a_lone_request_to_a_long_model_runs_at_once_without_waiting_the_queue_delay() -> None:
    run = SlowDouble(0.002, busy=True)  # over PROBE_BELOW_S: it runs on a thread
    batcher = _batcher(run, max_queue_delay_s=60.0)  # a lone request that waited for company would wait a minute

    async def main() -> list[BatchResult]:
        return [await asyncio.wait_for(batcher.submit({"x": np.ones((1, 2), np.float32)}), timeout=30) for _ in range(3)]

    results = asyncio.run(main())
    assert [r.batch_rows for r in results] == [1, 1, 1] and threading.current_thread().name not in run.threads
