"""Weighted aliases and mirrors through the real app: onnxruntime sessions of tiny uploaded versions, the embedded registry.

Version k of model `m` multiplies its input by k, so every answer shows which version computed it.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from services.config import Settings
from services.serving.sessions import LoadedModel
from tests.conftest import embedded_settings, kiln_client
from tests.onnx_factory import scale

SPLIT = {"versions": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]}
EVEN = {"versions": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}]}
ROW = {"inputs": [[1.0, 1.0]]}
HANG_S = 60.0  # how long a hung mirror blocks unless the test releases it: far beyond any caller's latency


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated registry holding versions 1-4 of `m`, uploaded once (each upload is probed in a child process)."""
    folder = tmp_path_factory.mktemp("seeded")
    with kiln_client(embedded_settings(folder)) as c:
        for factor in (1, 2, 3, 4):
            response = c.post("/v1/models/m/versions", files={"file": ("model.onnx", scale(float(factor), 2))})
            assert response.status_code == 201, response.text
    return folder


@pytest.fixture
def client(seeded: Path, tmp_path: Path) -> Iterator[TestClient]:
    """The app on a copy of the seeded registry and artifacts: each test starts with no alias and clean metrics."""
    shutil.copytree(seeded, tmp_path / "data")
    with kiln_client(Settings(data_dir=tmp_path / "data")) as c:  # type: ignore[call-arg]
        yield c


def _predict(client: TestClient, path: str = "/v1/models/m/predict", key: str | None = None) -> int:
    """One predict; the version that answered, after checking the header, the body and the outputs agree on it."""
    response = client.post(path, json=ROW, headers={"X-Kiln-Routing-Key": key} if key is not None else {})
    assert response.status_code == 200, response.text
    served = int(response.headers["X-Kiln-Model-Version"])
    assert response.json()["version"] == served and response.json()["outputs"] == [[float(served)] * 2]
    return served


def _metrics(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def _count(client: TestClient, name: str, **labels: str) -> float:
    return _metrics(client).get((name, tuple(sorted({"model": "m", **labels}.items()))), 0.0)


def _eventually(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the mirror did not catch up"
        time.sleep(0.05)


def test_a_split_alias_serves_each_version_by_its_weight_and_counts_each(client: TestClient) -> None:
    assert client.put("/v1/models/m/aliases/production", json=SPLIT).status_code == 200
    served = Counter(_predict(client) for _ in range(2000))  # the default route follows `production`
    assert set(served) == {1, 2}
    assert abs(served[1] / 2000 - 0.9) <= 0.03 and abs(served[2] / 2000 - 0.1) <= 0.03, served
    for version in (1, 2):
        assert _count(client, "kiln_inference_requests_total", version=str(version), outcome="ok") == served[version]
        assert _count(client, "kiln_inference_duration_seconds_count", version=str(version)) == served[version]


def test_weights_are_relative_and_keys_spread_over_three_versions_by_them(client: TestClient) -> None:
    body = {"versions": [{"version": 1, "weight": 5}, {"version": 2, "weight": 3}, {"version": 3, "weight": 2}]}
    assert client.put("/v1/models/m/aliases/canary", json=body).status_code == 200
    served = Counter(_predict(client, "/v1/models/m/aliases/canary/predict", key=f"user-{i}") for i in range(1000))
    for version, share in ((1, 0.5), (2, 0.3), (3, 0.2)):
        assert abs(served[version] / 1000 - share) <= 0.03, served


def test_a_routing_key_always_gets_the_same_version_on_every_replica(client: TestClient, tmp_path: Path) -> None:
    assert client.put("/v1/models/m/aliases/production", json=EVEN).status_code == 200
    keys = [f"customer-{i}" for i in range(100)]
    first = {key: _predict(client, key=key) for key in keys}
    for _ in range(3):
        assert {key: _predict(client, key=key) for key in keys} == first
    assert 30 <= Counter(first.values())[1] <= 70  # different keys spread
    # Another replica on the same registry (a fresh process would hash alike: SHA-256, not Python's salted hash()).
    with kiln_client(client.app.state.kiln.settings) as replica:  # type: ignore[attr-defined]
        assert {key: _predict(replica, key=key) for key in keys} == first
    # The same shares under other numbers (9:9 for 1:1) place every key alike.
    client.put("/v1/models/m/aliases/production", json={"versions": [{"version": 1, "weight": 9}, {"version": 2, "weight": 9}]})
    assert {key: _predict(client, key=key) for key in keys} == first


def test_v2_infer_answers_with_the_version_that_served_it(client: TestClient) -> None:
    client.put("/v1/models/m/aliases/production", json=EVEN)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 1.0]}]}
    served: Counter[str] = Counter()
    for i in range(200):
        response = client.post("/v2/models/m/infer", json=body, headers={"X-Kiln-Routing-Key": f"k{i % 20}"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["outputs"][0]["data"] == [float(answer["model_version"])] * 2
        assert response.headers["X-Kiln-Model-Version"] == answer["model_version"]
        served[answer["model_version"]] += 1
    assert set(served) == {"1", "2"} and all(n % 10 == 0 for n in served.values())  # each of the 20 keys stuck to one
    pinned = client.post("/v2/models/m/versions/3/infer", json=body).json()
    assert pinned["model_version"] == "3" and pinned["outputs"][0]["data"] == [3.0, 3.0]


def test_every_v1_answer_names_its_version_with_or_without_a_split(client: TestClient) -> None:
    assert _predict(client) == 4  # no `production`: the latest
    assert _predict(client, "/v1/models/m/versions/2/predict") == 2
    client.put("/v1/models/m/aliases/staging", json={"version": 3})
    assert _predict(client, "/v1/models/m/aliases/staging/predict") == 3


def test_the_alias_shows_its_split_and_mirror_and_a_plain_version_clears_them(client: TestClient) -> None:
    moved = client.put("/v1/models/m/aliases/production", json=SPLIT | {"mirror": 3})
    assert moved.status_code == 200, moved.text
    assert moved.json()["version"] == 1 and moved.json()["aliases"] == ["production"]  # the version's own fields, as before
    shown = {"versions": [{"version": 1, "weight": 90, "share": 0.9}, {"version": 2, "weight": 10, "share": 0.1}], "mirror": 3}
    assert moved.json()["rollout"] == shown
    model = client.get("/v1/models/m").json()
    assert model["aliases"] == {"production": 1} and model["rollouts"] == {"production": shown}
    assert client.get("/v1/models/m/aliases/production").json() == {"model": "m", "alias": "production", "version": 1} | shown
    assert client.put("/v1/models/m/aliases/production", json={"version": 2}).status_code == 200
    plain = {"model": "m", "alias": "production", "version": 2, "versions": [{"version": 2, "weight": 100, "share": 1.0}], "mirror": None}
    assert client.get("/v1/models/m/aliases/production").json() == plain
    assert {_predict(client) for _ in range(20)} == {2}
    assert client.delete("/v1/models/m/aliases/production").status_code == 204
    assert client.get("/v1/models/m/aliases/production").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"versions": [{"version": 1, "weight": 0}, {"version": 2, "weight": 10}]}, 422, "versions[0].weight"),
        ({"versions": [{"version": 1, "weight": 90}, {"version": 2, "weight": -1}]}, 422, "versions[1].weight"),
        ({"versions": [{"version": 1, "weight": 2.5}]}, 422, "versions[0].weight"),
        ({"versions": [{"version": 1, "weight": True}]}, 422, "versions[0].weight"),
        ({"versions": [{"version": 1, "weight": "10"}]}, 422, "versions[0].weight"),
        ({"versions": [{"version": 1}]}, 422, "versions[0].weight"),
        ({"versions": [{"version": 1, "weight": 1, "share": 2}]}, 422, "versions[0].share"),
        ({"versions": []}, 422, "versions"),
        ({"versions": [{"version": 1, "weight": 50}, {"version": 1, "weight": 50}]}, 422, "versions[1].version"),
        ({"versions": [{"version": 1, "weight": 50}, {"version": 9, "weight": 50}]}, 404, "versions[1].version"),
        (SPLIT | {"mirror": 2}, 422, "mirror"),
        (SPLIT | {"mirror": 9}, 404, "mirror"),
        ({"version": 1, "mirror": 1}, 422, "mirror"),
        ({"version": 1} | SPLIT, 422, "versions"),
        ({"mirror": 3}, 422, "version"),
    ],
)  # fmt: skip
def test_a_bad_rollout_is_a_4xx_naming_the_field_and_moves_nothing(client: TestClient, body: dict, status: int, field: str) -> None:
    client.put("/v1/models/m/aliases/production", json={"version": 4})
    response = client.put("/v1/models/m/aliases/production", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field, response.json()
    assert client.get("/v1/models/m/aliases/production").json()["versions"] == [{"version": 4, "weight": 100, "share": 1.0}]


def test_a_split_between_versions_that_take_different_inputs_is_refused(client: TestClient) -> None:
    """A version of another width would fail its share of callers: refused, naming it; as a mirror it may differ."""
    wider = client.post("/v1/models/m/versions", files={"file": ("model.onnx", scale(5.0, 3))})
    assert wider.status_code == 201, wider.text
    response = client.put("/v1/models/m/aliases/production", json={"versions": [{"version": 1, "weight": 9}, {"version": 5, "weight": 1}]})
    assert response.status_code == 422 and response.json()["error"]["field"] == "versions[1].version", response.text
    assert "must take the same inputs" in response.json()["error"]["message"]
    assert client.put("/v1/models/m/aliases/production", json={"version": 1, "mirror": 5}).status_code == 200


def test_a_mirror_gets_a_copy_of_each_request_and_counts_apart(client: TestClient) -> None:
    client.put("/v1/models/m/aliases/production", json={"version": 1, "mirror": 3})
    assert {_predict(client) for _ in range(50)} == {1}
    _eventually(lambda: _count(client, "kiln_mirror_requests_total", version="3", outcome="ok") == 50)
    assert _count(client, "kiln_mirror_duration_seconds_count", version="3") == 50
    assert _count(client, "kiln_inference_requests_total", version="3", outcome="ok") == 0  # not counted as served
    assert _count(client, "kiln_inference_requests_total", version="1", outcome="ok") == 50


@pytest.fixture
def mirror_fault(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[str]]]:
    """Version 3's session, and only it, fails as a test sets: ("raise",) raises, ("hang",) blocks until `release` is set."""
    release, mode = threading.Event(), ["raise"]
    sessions = client.app.state.kiln.sessions  # type: ignore[attr-defined]
    sha = client.get("/v1/models/m/versions/3").json()["artifact"]["sha256"]
    real = LoadedModel.run

    def run(self: LoadedModel, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self is sessions.cached(sha):
            if mode[0] == "raise":
                raise RuntimeError("the mirror's session failed")
            release.wait(HANG_S)
        return real(self, inputs)

    client.put("/v1/models/m/aliases/production", json=SPLIT | {"mirror": 3})  # loads version 3 before the patch
    monkeypatch.setattr(LoadedModel, "run", run)
    yield release, mode
    release.set()


def _timed(client: TestClient, n: int) -> list[float]:
    took = []
    for _ in range(n):
        started = time.perf_counter()
        assert _predict(client) in (1, 2)
        took.append(time.perf_counter() - started)
    return took


def test_a_mirror_that_raises_costs_the_caller_nothing(client: TestClient, mirror_fault: tuple[threading.Event, list[str]]) -> None:
    assert max(_timed(client, 100)) < 2.0
    _eventually(lambda: _count(client, "kiln_mirror_requests_total", version="3", outcome="error") == 100)
    assert _count(client, "kiln_inference_requests_total", version="1", outcome="error") == 0


def test_a_mirror_that_hangs_costs_the_caller_nothing_and_drops_copies_past_its_queue(
    client: TestClient, mirror_fault: tuple[threading.Event, list[str]]
) -> None:
    release, mode = mirror_fault
    mode[0] = "hang"
    took = _timed(client, 200)  # its two threads hang on the first copies; 64 more wait; the rest are dropped
    assert max(took) < 2.0 and sorted(took)[189] < 0.5, (max(took), sorted(took)[189])  # a 2-core machine shared with others
    dropped = _count(client, "kiln_mirror_requests_total", version="3", outcome="dropped")
    assert 200 - 64 - 2 <= dropped <= 200 - 64
    assert _count(client, "kiln_mirror_requests_total", version="3", outcome="ok") == 0
    release.set()  # the hung runs finish, and so do the copies that waited
    _eventually(lambda: _count(client, "kiln_mirror_requests_total", version="3", outcome="ok") == 200 - dropped)


def test_the_cli_and_sdk_set_a_split_and_predict_through_it(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln import cli
    from kiln.client import Client
    from typer.testing import CliRunner

    sdk = Client("http://testserver", api_key="unused")
    sdk.http.session = client  # the app in-process, with its admin key
    monkeypatch.setattr(cli, "_client", lambda: sdk)
    result = CliRunner().invoke(cli.app, ["alias", "m", "production", "1=3", "2=1", "--mirror", "4"])
    assert result.exit_code == 0, result.output
    assert "m@production -> version 1 (75%), version 2 (25%); mirrored to version 4" in result.output
    assert client.get("/v1/models/m/aliases/production").json()["mirror"] == 4
    assert {sdk.predict("m", [[1.0, 1.0]], alias="production").version for _ in range(60)} == {1, 2}  # the server picks
    assert sdk.set_alias("m", "production", 3).version == 3
    assert CliRunner().invoke(cli.app, ["alias", "m", "production", "3", "4=1"]).exit_code != 0
