"""Overload over HTTP: a uvicorn API with KILN_MAX_QUEUED_ROWS=4 answers a flooded model with 503 and Retry-After,
and keeps answering /healthz and another model while the flood goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np

from tests.e2e.replicas import api_replica
from tests.onnx_factory import linear_softmax, slow_tower

FLOOD_CLIENTS = 32
CHECKS = 10
V1_BODY = {"inputs": [[0.1] * 256]}
V2_BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256], "data": [0.1] * 256}]}


async def _flood(client: httpx.AsyncClient, refusing: asyncio.Event, stop: asyncio.Event, *, v2: bool) -> list[httpx.Response]:
    """One client of many, on a connection of its own: the slow model again and again until `stop`."""
    path, body = ("/v2/models/flood-tower/infer", V2_BODY) if v2 else ("/v1/models/flood-tower/predict", V1_BODY)
    answers: list[httpx.Response] = []
    while not stop.is_set():
        answers.append(await client.post(path, json=body))
        if answers[-1].status_code == 503:
            refusing.set()
    return answers


async def _meanwhile(client: httpx.AsyncClient, refusing: asyncio.Event, stop: asyncio.Event) -> list[tuple[str, int]]:
    """Once the flood is being refused: /healthz and the other model, CHECKS times each; then the flood stops."""
    await asyncio.wait_for(refusing.wait(), timeout=60)
    answers = []
    for _ in range(CHECKS):
        answers.append(("healthz", (await client.get("/healthz")).status_code))
        answers.append(("small", (await client.post("/v1/models/flood-small/predict", json={"inputs": [[1, 2, 3]]})).status_code))
    stop.set()
    return answers


async def _run(url: str, headers: dict[str, str]) -> tuple[list[httpx.Response], list[tuple[str, int]]]:
    limits = httpx.Limits(max_connections=FLOOD_CLIENTS, max_keepalive_connections=FLOOD_CLIENTS)
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as flooding,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as checking,
    ):
        for name, model in (("flood-tower", slow_tower()), ("flood-small", linear_softmax(np.eye(3, 2, dtype=np.float32)))):
            response = await checking.post(f"/v1/models/{name}/versions", files={"file": ("model.onnx", model)})
            assert response.status_code == 201, response.text
        refusing, stop = asyncio.Event(), asyncio.Event()
        flood = [asyncio.ensure_future(_flood(flooding, refusing, stop, v2=i % 2 == 1)) for i in range(FLOOD_CLIENTS)]
        try:
            answers = await _meanwhile(checking, refusing, stop)
        finally:
            stop.set()
        return [r for client_answers in await asyncio.gather(*flood) for r in client_answers], answers


def test_a_flooded_model_is_a_503_with_retry_after_while_health_and_other_models_answer(kiln: dict[str, Any]) -> None:
    with api_replica(kiln["env"], kiln["data_dir"] / "overload.log", max_queued_rows="4") as replica:
        flooded, answers = asyncio.run(_run(replica["url"], kiln["headers"]))
    statuses = {r.status_code for r in flooded}
    assert statuses == {200, 503}, statuses  # no 5xx but the 503 of a full queue
    refused = [r for r in flooded if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in refused)
    v1 = [r.json()["error"] for r in refused if r.url.path.startswith("/v1")]
    v2 = [r.json()["error"] for r in refused if r.url.path.startswith("/v2")]
    assert v1 and all(e["code"] == "overloaded" and "KILN_MAX_QUEUED_ROWS=4" in e["message"] for e in v1)
    assert v2 and all(isinstance(e, str) and "KILN_MAX_QUEUED_ROWS=4" in e for e in v2)
    assert answers == [("healthz", 200), ("small", 200)] * CHECKS  # each answered while the flood went on
