"""`kiln_inference_requests_total{outcome}` counts every outcome of a prediction: ok, invalid_input, overloaded and error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from tests.conftest import admin_headers, embedded_settings
from tests.onnx_factory import slow_tower

ROW = [0.1] * 256


def _count(app: Any, outcome: str) -> float:
    """As a scrape reads it (render() folds in what the hot path tallied)."""
    metrics = app.state.kiln.metrics
    metrics.render()
    value = metrics.registry.get_sample_value("kiln_inference_requests_total", {"model": "tower", "version": "1", "outcome": outcome})
    return value or 0.0


def test_each_outcome_of_a_prediction_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = embedded_settings(tmp_path, max_queued_rows=2)
    app = create_app(config)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kiln", headers=admin_headers(config.database_url))

    async def main() -> dict[str, list[int]]:
        async with client:
            upload = await client.post("/v1/models/tower/versions", files={"file": ("m.onnx", slow_tower())})
            assert upload.status_code == 201, upload.text
            ok = [(await client.post("/v1/models/tower/predict", json={"inputs": [ROW]})).status_code for _ in range(3)]
            bad = [(await client.post("/v2/models/tower/infer", json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 256],
                                                                                   "data": [True] * 256}]})).status_code,
                   (await client.post("/v1/models/tower/predict", json={"inputs": [[1.0, 2.0]]})).status_code]  # fmt: skip
            together = await asyncio.gather(*(client.post("/v1/models/tower/predict", json={"inputs": [ROW]}) for _ in range(24)))
            flood = [r.status_code for r in together]

            async def broken(*_: Any, **__: Any) -> None:
                raise RuntimeError("a bug")

            monkeypatch.setattr(app.state.kiln.predictor, "infer", broken)
            failed = [(await client.post("/v1/models/tower/predict", json={"inputs": [ROW]})).status_code]
            return {"ok": ok, "bad": bad, "flood": flood, "failed": failed}

    statuses = asyncio.run(main())
    assert statuses["ok"] == [200] * 3 and statuses["bad"] == [400, 422] and statuses["failed"] == [500]
    assert set(statuses["flood"]) == {200, 503}, statuses["flood"]
    assert _count(app, "ok") == 3 + statuses["flood"].count(200)
    assert _count(app, "invalid_input") == 2
    assert _count(app, "overloaded") == statuses["flood"].count(503)
    assert _count(app, "error") == 1
