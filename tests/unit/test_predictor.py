"""The Predictor's own bookkeeping: bounded batchers, idle ones dropped, sessions loaded once and off the event loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from services.registry.entities import ModelVersion
from services.serving.sessions import OnnxSessionCache
from services.usecases.serve import BatchingDefaults, Predictor
from tests.onnx_factory import sequence_sum

SHA = "a" * 64


def _version() -> ModelVersion:
    return ModelVersion(model_name="sum", job_id=None, artifact_sha256=SHA, artifact_size=1, signature={}, metrics={}, spec={},
                        hyperparameters={}, dataset={}, version=1, created_at=datetime.now(UTC))  # fmt: skip


class Artifacts:
    """Where the sequence-sum model lives, counting the loads and the threads they ran on."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SHA
        self.path.write_bytes(sequence_sum())
        self.loads, self.threads = 0, set[str]()

    def __call__(self, sha256: str) -> Path:
        self.loads += 1
        self.threads.add(threading.current_thread().name)
        return self.path


def _predictor(artifacts: Artifacts, **defaults: float) -> Predictor:
    def no_registry() -> None:
        raise AssertionError("these tests resolve nothing")

    return Predictor(
        uow_factory=no_registry, sessions=OnnxSessionCache(capacity=2, path_for=artifacts), executor=ThreadPoolExecutor(2),  # type: ignore[arg-type]
        defaults=BatchingDefaults(max_batch_size=64, max_queue_delay_ms=0.0, **defaults), ttl_s=60.0,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_client_varying_its_sequence_length_cannot_grow_the_batchers(tmp_path: Path) -> None:
    predictor = _predictor(Artifacts(tmp_path), max_batchers=8)

    async def main() -> None:
        for length in range(1, 51):  # every length is a batch shape of its own
            result = await predictor.infer(_version(), {"tokens": np.ones((2, length), np.float32)})
            np.testing.assert_array_equal(result.outputs[0], np.full((2, 1), float(length)))
            assert predictor.batcher_count <= 8

    asyncio.run(main())
    assert predictor.batcher_count == 8


def test_an_idle_batcher_is_dropped_when_another_is_made(tmp_path: Path) -> None:
    predictor = _predictor(Artifacts(tmp_path), batcher_idle_s=0.0)

    async def main() -> None:
        for length in (3, 4, 5):
            await predictor.infer(_version(), {"tokens": np.ones((1, length), np.float32)})
            assert predictor.batcher_count == 1  # the previous length's batcher was idle

    asyncio.run(main())


def test_a_session_is_loaded_once_on_a_thread_for_concurrent_callers(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path)
    predictor = _predictor(artifacts)

    async def main() -> list:
        return await asyncio.gather(*(predictor.model_async(_version()) for _ in range(20)))

    models = asyncio.run(main())
    assert artifacts.loads == 1 and all(m is models[0] for m in models)
    assert threading.current_thread().name not in artifacts.threads  # the load did not run on the event loop's thread
