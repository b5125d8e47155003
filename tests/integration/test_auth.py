"""API keys: hashed at rest, Bearer on every route but health, docs and metrics, scopes enforced; the kiln-admin CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.auth import required_scopes
from api.main import create_app
from services.config import Settings
from services.registry.tables import ApiKeyRow
from services.registry.unit_of_work import connect_registry
from tests.conftest import ROOT, admin_headers, embedded_settings
from tests.factories import job_body
from tests.onnx_factory import linear_softmax

WEIGHTS = np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]], np.float32)
ROW = {"inputs": [[1.0, 0.0, 0.0]]}
V2_ROW = {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 0.0, 0.0]}]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return embedded_settings(tmp_path, auth_cache_s=0.0)


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:  # no key of its own: each call says which it sends
        admin = admin_headers(settings.database_url)
        assert client.post("/v1/models/m/versions", files={"file": ("m.onnx", linear_softmax(WEIGHTS))}, headers=admin).status_code == 201
        yield client


def _key(settings: Settings, *scopes: str) -> dict[str, str]:
    return admin_headers(settings.database_url, scopes)


def test_without_a_key_every_route_but_the_public_ones_is_a_401(app_client: TestClient) -> None:
    response = app_client.get("/v1/jobs")
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized" and response.json()["error"]["field"] == "Authorization"
    assert "Authorization: Bearer" in response.json()["error"]["message"]
    assert app_client.post("/v1/models/m/predict", json=ROW).status_code == 401
    v2 = app_client.post("/v2/models/m/infer", json=V2_ROW)
    assert v2.status_code == 401 and isinstance(v2.json()["error"], str)  # the protocol's error shape
    assert app_client.get("/v1/jobs", headers={"Authorization": "Bearer kiln_0000_wrong"}).status_code == 401
    assert app_client.get("/v1/jobs", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    for public in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/v2/health/live", "/v2/health/ready"):
        assert app_client.get(public).status_code == 200, public


def test_each_scope_opens_its_routes_and_no_others(app_client: TestClient, settings: Settings) -> None:
    read, predict, train = _key(settings, "read"), _key(settings, "predict"), _key(settings, "train")
    assert app_client.get("/v1/jobs", headers=read).status_code == 200
    assert app_client.get("/v1/models/m/versions/1/artifact", headers=read).status_code == 200
    refused = app_client.post("/v1/jobs", json=job_body(), headers=read)
    assert refused.status_code == 403 and "'train' scope" in refused.json()["error"]["message"]
    assert app_client.post("/v1/models/m/predict", json=ROW, headers=read).status_code == 403

    assert app_client.post("/v1/models/m/predict", json=ROW, headers=predict).status_code == 200
    assert app_client.post("/v2/models/m/infer", json=V2_ROW, headers=predict).status_code == 200
    assert app_client.get("/v2/models/m", headers=predict).status_code == 200  # what a Triton client reads first
    assert app_client.get("/v1/jobs", headers=predict).status_code == 403

    assert app_client.post("/v1/jobs", json=job_body(), headers=train).status_code == 202
    assert app_client.put("/v1/models/m/aliases/production", json={"version": 1}, headers=train).status_code == 403
    assert app_client.put("/v1/models/m/aliases/production", json={"version": 1}, headers=_key(settings, "admin")).status_code == 200


def test_keys_are_stored_hashed_and_a_revoked_key_stops_working(app_client: TestClient, settings: Settings) -> None:
    headers = _key(settings, "read")
    token = headers["Authorization"].removeprefix("Bearer ")
    assert app_client.get("/v1/jobs", headers=headers).status_code == 200
    engine, uow_factory = connect_registry(settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(ApiKeyRow.id, ApiKeyRow.secret_sha256, ApiKeyRow.prefix)).all()
    mine = [r for r in rows if r.secret_sha256 == hashlib.sha256(token.encode()).hexdigest()]
    assert len(mine) == 1 and token.startswith(f"kiln_{mine[0].prefix}_")
    assert not any(token in str(tuple(r)) for r in rows)  # the token itself is nowhere
    with uow_factory() as uow:
        assert uow.keys.revoke(mine[0].id)
        uow.commit()
    engine.dispose()
    assert app_client.get("/v1/jobs", headers=headers).status_code == 401  # auth_cache_s is 0 here


def test_the_openapi_document_declares_the_bearer_key(app_client: TestClient) -> None:
    schema = app_client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "A Kiln API key (kiln-admin create-key)."
    }  # fmt: skip
    assert schema["paths"]["/v1/jobs"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    # Every operation is either public or needs a scope the table names.
    public = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}
    for path, operations in schema["paths"].items():
        for method in operations:
            assert (required_scopes(method.upper(), path) is None) == (path in public)


def test_turning_auth_off_is_explicit_and_loud(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(create_app(embedded_settings(tmp_path, auth_disabled=True))) as client:
        assert client.get("/v1/jobs").status_code == 200
    assert "WARNING kiln.api: AUTHENTICATION IS OFF (KILN_AUTH_DISABLED=true)" in capsys.readouterr().err


def test_metrics_can_move_off_the_api_port(tmp_path: Path) -> None:
    with TestClient(create_app(embedded_settings(tmp_path, metrics_port=9555))) as client:
        response = client.get("/metrics")
    assert response.status_code == 404 and "9555" in response.json()["error"]["message"]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")} | {"KILN_DATA_DIR": str(settings.data_dir)}
    return subprocess.run([str(ROOT / ".venv" / "bin" / "kiln-admin"), *args], env=env, capture_output=True, text=True, cwd=ROOT)


def test_kiln_admin_mints_lists_and_revokes_keys(app_client: TestClient, settings: Settings) -> None:
    made = _cli(settings, "create-key", "--scopes", "read,predict", "--name", "dashboard")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("kiln_") and "read, predict" in made.stderr
    headers = {"Authorization": f"Bearer {token}"}
    assert app_client.post("/v1/models/m/predict", json=ROW, headers=headers).status_code == 200
    listed = _cli(settings, "list-keys").stdout
    (line,) = [entry for entry in listed.splitlines() if "dashboard" in entry]
    assert "read,predict" in line and "active" in line and token not in listed
    assert _cli(settings, "revoke-key", line.split()[0]).returncode == 0
    assert app_client.post("/v1/models/m/predict", json=ROW, headers=headers).status_code == 401
    wrong = _cli(settings, "create-key", "--scopes", "everything")
    assert wrong.returncode == 2 and "expected a comma-separated list of read, predict, train, admin" in wrong.stderr
