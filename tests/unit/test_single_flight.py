"""One blocking call for every caller that wants the same thing at once: a key lookup under load is one query, not one per request."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from starlette.types import Message

from api.auth import AuthGate
from services.usecases.single_flight import SingleFlight


class Slow:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, arg: Any) -> Any:
        with self.lock:
            self.calls.append(arg)
        time.sleep(0.05)
        if arg == "bad":
            raise ValueError("bad")
        return arg * 2


def test_concurrent_callers_of_one_key_share_one_call_and_other_keys_get_their_own() -> None:
    slow, flights = Slow(), SingleFlight()

    async def main() -> list[Any]:
        return await asyncio.gather(*(flights.run(k, slow, k) for k in ["a"] * 20 + ["b"] * 5))

    assert asyncio.run(main()) == ["aa"] * 20 + ["bb"] * 5
    assert sorted(slow.calls) == ["a", "b"]


def test_an_error_reaches_every_waiting_caller_and_the_next_call_runs_afresh() -> None:
    slow, flights = Slow(), SingleFlight()

    async def main() -> None:
        results = await asyncio.gather(*(flights.run("k", slow, "bad") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        with pytest.raises(ValueError):
            await flights.run("k", slow, "bad")

    asyncio.run(main())
    assert slow.calls == ["bad", "bad"]


def test_one_caller_cancelled_leaves_the_call_to_the_others() -> None:
    slow, flights = Slow(), SingleFlight()

    async def main() -> Any:
        first = asyncio.ensure_future(flights.run("k", slow, "x"))
        second = asyncio.ensure_future(flights.run("k", slow, "x"))
        await asyncio.sleep(0.01)
        first.cancel()
        return await second

    assert asyncio.run(main()) == "xx" and slow.calls == ["x"]


class CountingKeys:
    """A KeyCache stand-in whose entries are always stale, counting lookups."""

    def __init__(self) -> None:
        self.lookups = 0

    def fresh(self, token: str) -> tuple[bool, None]:
        return False, None

    def lookup(self, token: str) -> None:
        self.lookups += 1
        time.sleep(0.05)
        return None


def test_requests_arriving_while_a_key_is_looked_up_wait_for_that_lookup() -> None:
    keys = CountingKeys()
    gate = AuthGate(lambda *_: None, keys, disabled=False)  # type: ignore[arg-type]
    statuses: list[int] = []

    async def request() -> None:
        scope = {"type": "http", "method": "POST", "path": "/v1/models/m/predict", "headers": [(b"authorization", b"Bearer kiln_x")]}

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await gate(scope, receive, send)

    async def main() -> None:
        await asyncio.gather(*(request() for _ in range(32)))

    asyncio.run(main())
    assert statuses == [401] * 32 and keys.lookups == 1
