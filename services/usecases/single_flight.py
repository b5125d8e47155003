"""One blocking call on a thread for every caller that wants the same thing at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


class SingleFlight:
    """`await flights.run(key, fn, arg)`: `fn(arg)` on a thread of `executor` (None: the loop's default); callers asking
    for the same key meanwhile wait for that one call. Without it, a cache entry that expires under load becomes one
    query per request in flight (64 clients: 64 identical queries)."""

    def __init__(self, executor: Executor | None = None) -> None:
        self.executor = executor
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, fn: Callable[[Any], T], arg: Any) -> T:
        loop = asyncio.get_running_loop()
        future = self._inflight.get(key)
        if future is None or future.get_loop() is not loop:
            future = self._inflight[key] = loop.run_in_executor(self.executor, fn, arg)
            future.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(future)  # one caller cancelled leaves the call to the others

    def _settled(self, key: Hashable, future: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.cancelled():
            future.exception()  # retrieved, even when every caller left: no "never retrieved" warning
