"""Dynamic batching: a lone request runs at once; concurrent ones share a run and get their own rows back."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from services.serving.batcher import DynamicBatcher


class SlowDouble:
    """Doubles its input after a pause, recording the batch sizes it was run with."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s, self.batches, self.threads = pause_s, [], set()

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.batches.append(len(feeds["x"]))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.pause_s)
        return [feeds["x"] * 2]


def _batcher(run: SlowDouble, **options: float) -> DynamicBatcher:
    kwargs = {"max_batch_size": 64, "max_queue_delay_s": 0.0} | options
    return DynamicBatcher(run, executor=ThreadPoolExecutor(2), **kwargs)  # type: ignore[arg-type]


def test_a_lone_request_runs_at_once_on_the_calling_thread() -> None:
    run = SlowDouble(0.0)
    result = asyncio.run(_batcher(run).submit({"x": np.ones((3, 2), np.float32)}))
    assert result.batch_rows == 3 and result.queue_s == 0.0
    np.testing.assert_array_equal(result.outputs[0], np.full((3, 2), 2.0))
    assert run.threads == {threading.current_thread().name}


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
    batcher = _batcher(run, max_queue_delay_s=0.05)
    one = {"x": np.ones((1, 1), np.float32)}

    async def late() -> object:
        await asyncio.sleep(0.01)
        return await batcher.submit(one)

    async def main() -> None:
        await asyncio.gather(batcher.submit(one), batcher.submit(one), late())

    asyncio.run(main())
    assert run.batches == [3]  # two arrived together, and waited long enough for the third


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
