"""Shadow traffic: each request through an alias with a mirror is copied to the mirror version, off the request path.

A copy is queued once the caller's answer is computed, on a bounded queue that drops what does not fit, and run by
threads of its own: never the inference executor, a batcher or a model's row budget. So a mirror that fails or hangs costs
the caller nothing; its answers are thrown away and only its outcomes and latency are counted (kiln_mirror_*). A hung
mirror holds its threads: the queue then fills and further copies are counted as dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from services.errors import InvalidInput
from services.registry.entities import ModelVersion
from services.serving.sessions import LoadedModel
from services.serving.signature import check_input

log = logging.getLogger(__name__)
Feeds = dict[str, np.ndarray]
FeedsFor = Callable[[ModelVersion, LoadedModel], Feeds]  # the request as the mirror's own feeds (its signature, its vocabulary)


class MirrorObserver(Protocol):
    def observe_mirror(self, version: ModelVersion, outcome: str, seconds: float | None = None) -> None: ...


class Mirror:
    """Runs copies of requests on mirror versions: `workers` threads (started on the first copy), `max_queued` waiting."""

    def __init__(self, *, load: Callable[[ModelVersion], LoadedModel], metrics: MirrorObserver, workers: int = 2,
                 max_queued: int = 64) -> None:  # fmt: skip
        self._load, self._metrics, self._workers = load, metrics, workers
        self._queue: queue.Queue[tuple[ModelVersion, FeedsFor] | None] = queue.Queue(maxsize=max_queued)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._warned: set[tuple[str, int]] = set()

    def copy(self, version: ModelVersion | None, feeds_for: FeedsFor) -> None:
        """Queue a copy for `version` (nothing when None); never blocks, and drops the copy when the queue is full."""
        if version is None:
            return
        if not self._threads:
            self._start()
        try:
            self._queue.put_nowait((version, feeds_for))
        except queue.Full:
            self._metrics.observe_mirror(version, "dropped")

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self._workers:  # daemons: a mirror hung in onnxruntime cannot hold the process open
                thread = threading.Thread(target=self._work, name=f"kiln-mirror-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            version, feeds_for = item
            started = time.perf_counter()
            try:
                self.run(version, feeds_for)
            except Exception as exc:
                self._metrics.observe_mirror(version, "error", time.perf_counter() - started)
                self._warn(version, exc)
            else:
                self._metrics.observe_mirror(version, "ok", time.perf_counter() - started)

    def run(self, version: ModelVersion, feeds_for: FeedsFor) -> list[np.ndarray]:
        """One copy, on the calling thread: load the mirror's session, check the inputs against its signature, run."""
        model = self._load(version)
        feeds = feeds_for(version, model)
        for spec in model.signature.inputs:
            if spec.name not in feeds:
                raise InvalidInput(f"missing input {spec.name!r}: expected {spec.describe()}", field="inputs")
            check_input(spec, feeds[spec.name])
        return model.run(feeds)

    def _warn(self, version: ModelVersion, exc: Exception) -> None:
        """Log a mirror's first failure (with its traceback), then only count them: a broken mirror must not flood the log."""
        key = (version.model_name, version.version)
        if key in self._warned:
            log.debug("mirror version %s of %s failed again: %s", key[1], key[0], exc)
            return
        self._warned.add(key)
        log.warning("mirror version %s of %s failed a copied request (later failures are only counted in "
                    "kiln_mirror_requests_total)", key[1], key[0], exc_info=exc)  # fmt: skip

    def close(self) -> None:
        """Ask the threads to stop once the copies queued before this are done (a hung one stays: it is a daemon)."""
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
