"""Serving under pressure, in-process over ASGI: a flood of 404s asks the registry once, and a flooded model answers 503
with Retry-After while /healthz and the other models keep answering."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from api.main import create_app
from services.registry.unit_of_work import SqlUnitOfWork
from tests.conftest import admin_headers, embedded_settings
from tests.onnx_factory import linear_softmax, slow_tower

WEIGHTS = np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]], np.float32)


class CountingUow:
    """The real unit-of-work factory, counting how often the predictor opens one (one per registry lookup)."""

    def __init__(self, real: Callable[[], SqlUnitOfWork]) -> None:
        self.real, self.opened = real, 0

    def __call__(self) -> SqlUnitOfWork:
        self.opened += 1
        return self.real()


def _client(tmp_path: Path, **settings: Any) -> tuple[httpx.AsyncClient, Any]:
    config = embedded_settings(tmp_path, **settings)
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://kiln", headers=admin_headers(config.database_url)), app


async def _upload(client: httpx.AsyncClient, name: str, model: bytes) -> None:
    response = await client.post(f"/v1/models/{name}/versions", files={"file": ("model.onnx", model)})
    assert response.status_code == 201, response.text


def test_a_flood_of_requests_for_a_missing_model_asks_the_registry_once(tmp_path: Path) -> None:
    client, app = _client(tmp_path, resolve_cache_s=300.0)
    predictor = app.state.kiln.predictor
    counting = predictor.uow_factory = CountingUow(predictor.uow_factory)

    async def main() -> None:
        async with client:
            together = await asyncio.gather(*(client.post("/v1/models/ghost/predict", json={"inputs": [[1, 2, 3]]}) for _ in range(50)))
            one_by_one = [await client.post("/v2/models/ghost/infer", json={"inputs": []}) for _ in range(50)]
            assert {r.status_code for r in together} == {404} and {r.status_code for r in one_by_one} == {404}
            assert together[0].json()["error"]["message"] == "no model named 'ghost'"
            assert counting.opened == 1  # the concurrent misses shared one lookup, and the rest were remembered
            await _upload(client, "ghost", linear_softmax(WEIGHTS))  # a version registered here is served at once
            served = await client.post("/v1/models/ghost/predict", json={"inputs": [[1, 2, 3]]})
            assert served.status_code == 200, served.text
            missing_version = [await client.post("/v1/models/ghost/versions/7/predict", json={"inputs": [[1, 2, 3]]}) for _ in range(20)]
            assert {r.status_code for r in missing_version} == {404} and counting.opened == 3

    asyncio.run(main())


V1_BODY = {"inputs": [[0.1] * 256]}
V2_BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": [0.1] * 256}]}


async def _flood(client: httpx.AsyncClient, refusing: asyncio.Event, stop: asyncio.Event, *, v2: bool) -> list[httpx.Response]:
    """One client of many: predictions on the slow model (v1 or v2 infer), one after another, until `stop`."""
    path, body = ("/v2/models/tower/infer", V2_BODY) if v2 else ("/v1/models/tower/predict", V1_BODY)
    answers: list[httpx.Response] = []
    while not stop.is_set():
        answers.append(await client.post(path, json=body))
        if answers[-1].status_code == 503:
            refusing.set()
        # In-process a refused request never suspends, so a client looping on them would hold the loop forever;
        # over a socket each request is read in a turn of its own, as here.
        await asyncio.sleep(0)
    return answers


async def _meanwhile(client: httpx.AsyncClient, refusing: asyncio.Event, stop: asyncio.Event) -> list[tuple[str, int]]:
    """/healthz and another model's predictions once the flood is refused, and until it stops (only after them)."""
    await refusing.wait()
    answers: list[tuple[str, int]] = []
    for _ in range(5):
        answers.append(("healthz", (await client.get("/healthz")).status_code))
        answers.append(("small", (await client.post("/v1/models/small/predict", json={"inputs": [[1, 2, 3]]})).status_code))
    stop.set()
    return answers


def test_a_flooded_model_answers_503_while_the_api_and_other_models_keep_answering(tmp_path: Path) -> None:
    client, _ = _client(tmp_path, max_queued_rows=4)

    async def main() -> tuple[list[httpx.Response], list[tuple[str, int]]]:
        async with client:
            await _upload(client, "tower", slow_tower())
            await _upload(client, "small", linear_softmax(WEIGHTS))
            refusing, stop = asyncio.Event(), asyncio.Event()
            flood = [asyncio.ensure_future(_flood(client, refusing, stop, v2=i % 2 == 1)) for i in range(16)]
            answers = await _meanwhile(client, refusing, stop)
            return [r for client_answers in await asyncio.gather(*flood) for r in client_answers], answers

    flooded, answers = asyncio.run(main())
    statuses = [r.status_code for r in flooded]
    assert set(statuses) == {200, 503}, statuses  # no 5xx but the 503 of a full queue
    refused = [r for r in flooded if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in refused)
    v1 = [r.json()["error"] for r in refused if r.url.path.startswith("/v1")]
    v2 = [r.json()["error"] for r in refused if r.url.path.startswith("/v2")]
    assert v1 and all(e["code"] == "overloaded" and "KILN_MAX_QUEUED_ROWS=4" in e["message"] for e in v1)
    assert v2 and all(isinstance(e, str) and "KILN_MAX_QUEUED_ROWS=4" in e for e in v2)  # the protocol's own shape
    assert answers == [("healthz", 200), ("small", 200)] * 5  # every one answered while the flood was going on
