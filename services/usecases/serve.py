"""Serving predictions: resolve what a call names (cached briefly), check inputs, batch, run.

Nothing slow runs on the event loop: a resolution or a session the caches do not hold is fetched on
a thread, once for all the requests that want it at that moment, while a cache hit stays a dict
lookup. A name that does not exist is remembered as missing for as long as one that does, so a
flood of 404s does not become a flood of queries.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.errors import InvalidInput, NotFound
from services.registry.entities import ModelVersion
from services.serving.batcher import BatchResult, DynamicBatcher, QueueBudget
from services.serving.sessions import LoadedModel, OnnxSessionCache
from services.serving.signature import check_input
from services.usecases.jobs import UowFactory
from services.usecases.rollouts import Target, resolve_target
from services.usecases.single_flight import SingleFlight

Call = tuple[str, int | None, str | None]  # name, version, alias
MAX_RESOLUTIONS = 10_000


@dataclass(frozen=True)
class BatchingDefaults:
    max_batch_size: int
    max_queue_delay_ms: float
    max_queued_rows: int = 4096  # per model, queued or running; past it a request is a 503 (KILN_MAX_QUEUED_ROWS)
    max_batchers: int = 256  # one per model, serving options and input shape: a varying sequence length makes many
    batcher_idle_s: float = 60.0  # a batcher unused this long is dropped the next time one is made


class Predictor:
    """One per API process. Resolutions are cached for `ttl_s`, so an alias moved on another replica is seen within it.

    `blocking` runs registry queries and session loads (None: the event loop's default executor),
    apart from `executor`, which runs batched inference.
    """

    def __init__(self, *, uow_factory: UowFactory, sessions: OnnxSessionCache, executor: Executor, defaults: BatchingDefaults,
                 ttl_s: float, blocking: Executor | None = None) -> None:  # fmt: skip
        self.uow_factory, self.sessions, self.executor, self.defaults, self.ttl_s = uow_factory, sessions, executor, defaults, ttl_s
        self.blocking = blocking
        self._resolved: dict[Call, tuple[float, Target | NotFound]] = {}
        self._batchers: OrderedDict[tuple[Any, ...], DynamicBatcher] = OrderedDict()  # least recently used first
        self._budgets: weakref.WeakValueDictionary[str, QueueBudget] = weakref.WeakValueDictionary()  # per artifact
        self._flights = SingleFlight(blocking)
        self._lock = threading.Lock()

    def resolve(self, name: str, *, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """The version a call names (a split alias: its primary), from the cache or the registry (this blocks)."""
        call = (name, version, alias)
        cached = self._cached(call)
        return (cached if cached is not None else self._lookup(call)).primary

    async def resolve_async(self, name: str, *, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """`resolve` for the event loop."""
        return (await self.target_async(name, version=version, alias=alias)).primary

    async def target_async(self, name: str, *, version: int | None = None, alias: str | None = None) -> Target:
        """The versions a call may be served by, with their weights and mirror: a hit is a dict lookup, a miss a query on a
        thread. Pick one per request with `Target.pick`."""
        call = (name, version, alias)
        cached = self._cached(call)
        return cached if cached is not None else await self._flights.run(("resolve", call), self._lookup, call)

    def _cached(self, call: Call) -> Target | None:
        """The cached answer while fresh; a remembered miss is raised again as a new NotFound."""
        cached = self._resolved.get(call)
        if cached is None or time.monotonic() - cached[0] >= self.ttl_s:
            return None
        found = cached[1]
        if isinstance(found, NotFound):
            raise NotFound(found.message, field=found.field)
        return found

    def _lookup(self, call: Call) -> Target:
        """Ask the registry, and remember the answer (a missing name or version too) for `ttl_s`."""
        now = time.monotonic()
        name, version, alias = call
        try:
            found = resolve_target(name, version=version, alias=alias, uow_factory=self.uow_factory)
        except NotFound as missing:
            self._remember(call, now, NotFound(missing.message, field=missing.field))  # a copy: no traceback kept
            raise
        self._remember(call, now, found)
        return found

    def _remember(self, call: Call, now: float, answer: Target | NotFound) -> None:
        with self._lock:
            if len(self._resolved) >= MAX_RESOLUTIONS:
                self._resolved.clear()
            self._resolved[call] = (now, answer)

    def forget(self, name: str) -> None:
        """Drop cached resolutions of `name`: its aliases, versions or serving options changed here.

        Batchers are keyed by the serving options, so changed options get a new one; the old one goes idle and is dropped.
        """
        with self._lock:
            self._resolved = {k: v for k, v in self._resolved.items() if k[0] != name}

    def model(self, version: ModelVersion) -> LoadedModel:
        """The version's session, loaded and warmed on a miss (this blocks: call it off the event loop)."""
        return self.sessions.get(version.artifact_sha256)

    async def model_async(self, version: ModelVersion) -> LoadedModel:
        """`model` for the event loop: a hit is a dict lookup, a miss loads on a thread, once for concurrent callers."""
        sha = version.artifact_sha256
        model = self.sessions.cached(sha)
        return model if model is not None else await self._flights.run(("load", sha), self.sessions.get, sha)

    async def infer(self, version: ModelVersion, feeds: dict[str, np.ndarray]) -> BatchResult:
        """Check `feeds` against the version's signature, then run them, batched with concurrent calls."""
        model = self.sessions.cached(version.artifact_sha256) or await self.model_async(version)  # no coroutine on a hit
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
        if batcher is not None:
            self._batchers.move_to_end(key)
            return batcher
        self._prune()
        serving, budget = version.serving or {}, self._budget(version.artifact_sha256)
        batcher = self._batchers[key] = DynamicBatcher(
            model.run, max_batch_size=serving.get("max_batch_size", self.defaults.max_batch_size), budget=budget,
            max_queue_delay_s=serving.get("max_queue_delay_ms", self.defaults.max_queue_delay_ms) / 1000, executor=self.executor,
        )  # fmt: skip
        return batcher

    def _budget(self, sha256: str) -> QueueBudget:
        """The row budget every batcher of one artifact shares; it lives while one of them does."""
        budget = self._budgets.get(sha256)
        if budget is None:
            budget = self._budgets[sha256] = QueueBudget(limit=self.defaults.max_queued_rows)
        return budget

    def _prune(self) -> None:
        """Before a batcher is added: drop those idle for `batcher_idle_s`, then the least recent past `max_batchers`.

        One dropped while busy finishes what it holds (its drain task keeps it) and counts against the same budget.
        """
        stale = time.monotonic() - self.defaults.batcher_idle_s
        while self._batchers:
            key, oldest = next(iter(self._batchers.items()))
            if len(self._batchers) < self.defaults.max_batchers and not (oldest.idle and oldest.last_used <= stale):
                return
            del self._batchers[key]

    @property
    def batcher_count(self) -> int:
        return len(self._batchers)
