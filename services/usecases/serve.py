"""Serving predictions: resolve what a call names (cached briefly), check inputs, batch, run."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.errors import InvalidInput
from services.registry.entities import ModelVersion
from services.serving.batcher import BatchResult, DynamicBatcher
from services.serving.sessions import LoadedModel, OnnxSessionCache
from services.serving.signature import check_input
from services.usecases.jobs import UowFactory
from services.usecases.versions import resolve


@dataclass(frozen=True)
class BatchingDefaults:
    max_batch_size: int
    max_queue_delay_ms: float


class Predictor:
    """One per API process. Resolutions are cached for `ttl_s`, so an alias moved on another replica is seen within it."""

    def __init__(self, *, uow_factory: UowFactory, sessions: OnnxSessionCache, executor: Executor, defaults: BatchingDefaults,
                 ttl_s: float) -> None:  # fmt: skip
        self.uow_factory, self.sessions, self.executor, self.defaults, self.ttl_s = uow_factory, sessions, executor, defaults, ttl_s
        self._resolved: dict[tuple[str, int | None, str | None], tuple[float, ModelVersion]] = {}
        self._batchers: dict[tuple[Any, ...], DynamicBatcher] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str, *, version: int | None = None, alias: str | None = None) -> ModelVersion:
        key = (name, version, alias)
        now = time.monotonic()
        cached = self._resolved.get(key)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        found = resolve(name, version=version, alias=alias, uow_factory=self.uow_factory)
        with self._lock:
            if len(self._resolved) > 10_000:
                self._resolved.clear()
            self._resolved[key] = (now, found)
        return found

    def forget(self, name: str, sha256: str | None = None) -> None:
        """Drop cached resolutions of `name`, and the batchers of artifact `sha256` (its serving options changed)."""
        with self._lock:
            self._resolved = {k: v for k, v in self._resolved.items() if k[0] != name}
            self._batchers = {k: v for k, v in self._batchers.items() if k[0] != sha256}

    def model(self, version: ModelVersion) -> LoadedModel:
        return self.sessions.get(version.artifact_sha256)

    async def infer(self, version: ModelVersion, feeds: dict[str, np.ndarray]) -> BatchResult:
        """Check `feeds` against the version's signature, then run them, batched with concurrent calls."""
        model = self.model(version)
        for spec in model.signature.inputs:
            if spec.name not in feeds:
                raise InvalidInput(f"missing input {spec.name!r}: expected {spec.describe()}", field="inputs")
            check_input(spec, feeds[spec.name])
        rows = {len(a) for a in feeds.values()}
        if len(rows) != 1:
            raise InvalidInput("every input must have the same number of rows", field="inputs")
        # Keyed by the serving options too: options changed on any replica take effect once the resolution refreshes.
        serving = tuple(sorted((version.serving or {}).items()))
        key = (version.artifact_sha256, serving, *((n, a.shape[1:], a.dtype.str) for n, a in sorted(feeds.items())))
        return await self._batcher(key, model, version).submit(feeds)

    def _batcher(self, key: tuple[Any, ...], model: LoadedModel, version: ModelVersion) -> DynamicBatcher:
        batcher = self._batchers.get(key)
        if batcher is None:
            serving = version.serving or {}
            batcher = DynamicBatcher(
                model.run, max_batch_size=serving.get("max_batch_size", self.defaults.max_batch_size),
                max_queue_delay_s=serving.get("max_queue_delay_ms", self.defaults.max_queue_delay_ms) / 1000, executor=self.executor,
            )  # fmt: skip
            self._batchers[key] = batcher
        return batcher
