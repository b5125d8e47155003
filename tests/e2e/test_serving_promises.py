"""The README's serving promises, over HTTP on the PostgreSQL + Redis stack and extra API replicas on its registry.

- Concurrent requests for one version merge into one onnxruntime run; a version's serving options change that.
- An alias moved on one API replica is seen by another within KILN_RESOLVE_CACHE_S (default 1 s).
- Sessions are kept in an LRU of KILN_MAX_LOADED_MODELS: with 1, predicting two models in turn evicts each time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.data.builtins import load_builtin
from tests.e2e.helpers import wait_for_job
from tests.e2e.replicas import api_replica, metric, wait_for
from tests.factories import tiny_job

RESOLVE_CACHE_S = 1.0  # the README's default, which the replicas below keep
CONCURRENCY = 32
ROW = [float(v) for v in load_builtin("digits").x_test[0]]


@pytest.fixture(scope="module")
def models(kiln: dict) -> dict[str, int]:
    """Trained once for the module: `served-a` versions 1 and 2 and `served-b` version 1, each with weights of its own."""
    bodies = [tiny_job(model_name="served-a", training={"seed": 1}), tiny_job(model_name="served-a", training={"seed": 2}),
              tiny_job(model_name="served-b", training={"seed": 3})]  # fmt: skip
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        locations = []
        for body in bodies:  # one after another, so served-a's versions are numbered in this order
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            locations.append(response.headers["location"])
            job = wait_for_job(client, locations[-1])
            assert job["state"] == "succeeded", job["error"]
        jobs = [client.get(loc).json() for loc in locations]
    return {"a1": jobs[0]["version"], "a2": jobs[1]["version"], "b1": jobs[2]["version"]}


def _predict(client: httpx.Client, path: str) -> dict[str, Any]:
    response = client.post(path, json={"inputs": [ROW]})
    assert response.status_code == 200, response.text
    return response.json()


async def _concurrent_predicts(url: str, headers: dict[str, str], path: str, n: int) -> None:
    """`n` one-row predicts sent at once, each on a connection of its own."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:
        responses = await asyncio.gather(*(client.post(path, json={"inputs": [ROW]}) for _ in range(n)))
    assert [r.status_code for r in responses] == [200] * n, responses[0].text


def _batch_counts(url: str, name: str, version: int) -> tuple[float, float]:
    """(predictions served, those that rode in a run of more than one row) for one version, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    labels = {"model": name, "version": str(version)}
    served = metric(text, "kiln_inference_batch_size_count", **labels)
    return served, served - metric(text, "kiln_inference_batch_size_bucket", le="1.0", **labels)


def test_concurrent_predicts_merge_into_batches_until_a_version_sets_max_batch_size_1(kiln: dict, models: dict[str, int]) -> None:
    url, headers, version = kiln["url"], kiln["headers"], models["b1"]
    path = f"/v1/models/served-b/versions/{version}/predict"

    def merged_once() -> bool:
        asyncio.run(_concurrent_predicts(url, headers, path, CONCURRENCY))
        return _batch_counts(url, "served-b", version)[1] > 0

    wait_for(merged_once, what="concurrent predicts to share an onnxruntime run", timeout=120)
    patched = httpx.patch(f"{url}/v1/models/served-b/versions/{version}", json={"max_batch_size": 1}, headers=headers, timeout=30)
    assert patched.status_code == 200, patched.text
    served, merged = _batch_counts(url, "served-b", version)
    rounds = 5
    for _ in range(rounds):
        asyncio.run(_concurrent_predicts(url, headers, path, CONCURRENCY))
    served_after, merged_after = _batch_counts(url, "served-b", version)
    assert served_after == served + rounds * CONCURRENCY
    assert merged_after == merged  # every prediction since the PATCH ran in a batch of one row


def test_an_alias_moved_on_one_replica_is_seen_by_another_within_the_resolve_cache(
    kiln: dict, models: dict[str, int], tmp_path: Path
) -> None:
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as first:
        assert first.put("/v1/models/served-a/aliases/live", json={"version": models["a1"]}).status_code == 200
        with api_replica(kiln["env"], tmp_path / "replica.log") as replica, \
                httpx.Client(base_url=replica["url"], timeout=30, headers=kiln["headers"]) as second:  # fmt: skip
            assert _predict(second, "/v1/models/served-a/aliases/live/predict")["version"] == models["a1"]  # now cached there
            assert first.put("/v1/models/served-a/aliases/live", json={"version": models["a2"]}).status_code == 200
            moved_at = time.monotonic()
            seen: list[tuple[float, int]] = []

            def sees_the_move() -> bool:
                started = time.monotonic()
                seen.append((started, _predict(second, "/v1/models/served-a/aliases/live/predict")["version"]))
                return seen[-1][1] == models["a2"]

            wait_for(sees_the_move, what="the second replica to follow the alias", timeout=30)
    stale = [started - moved_at for started, version in seen if version == models["a1"]]
    # Requests that began more than the cache's lifetime (plus scheduling slack) after the move all saw it.
    assert max(stale, default=0.0) < RESOLVE_CACHE_S + 0.5, stale
    assert all(v == models["a2"] for started, v in seen if started - moved_at >= RESOLVE_CACHE_S + 0.5)


def test_max_loaded_models_1_evicts_each_model_when_the_other_is_predicted(kiln: dict, models: dict[str, int], tmp_path: Path) -> None:
    paths = [f"/v1/models/served-a/versions/{models['a1']}/predict", f"/v1/models/served-b/versions/{models['b1']}/predict"]
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as roomy:
        expected = [_predict(roomy, p)["outputs"] for p in paths]
        assert metric(roomy.get("/metrics").text, "kiln_models_loaded") >= 2  # 16 by default: both stay loaded
    assert not np.allclose(expected[0], expected[1])  # two different models
    with api_replica(kiln["env"], tmp_path / "lru.log", max_loaded_models="1") as replica, \
            httpx.Client(base_url=replica["url"], timeout=30, headers=kiln["headers"]) as tight:  # fmt: skip
        for turn in range(6):  # a, b, a, b ...: each load pushes the other model out
            outputs = _predict(tight, paths[turn % 2])["outputs"]
            np.testing.assert_allclose(outputs, expected[turn % 2], rtol=1e-6)  # reloaded, and still the same model
            assert metric(tight.get("/metrics").text, "kiln_models_loaded") == 1
