"""The route table (api.routes) is the app: every route has one entry with its scopes, and every entry a route."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts

from api.auth import required_scopes
from api.main import create_app
from api.routers import predict, v2
from api.routes import ROUTES, hot_routes, matching
from api.schemas import InferenceRequest, InferenceResponse
from tests.conftest import embedded_settings, kiln_client

SCOPES = {"read", "predict", "train", "admin"}


def _app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(embedded_settings(tmp_path))
    found: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        for method in route.methods or ():
            if method != "HEAD":  # a GET route answers HEAD too
                found.add((method, str(route.path_format)))
    return found


def test_every_route_of_the_app_is_in_the_table_and_every_entry_is_a_route(tmp_path: Path) -> None:
    declared = {(spec.method, spec.path) for spec in ROUTES}
    served = _app_routes(tmp_path)
    assert served - declared == set(), "routes without an entry in api/routes.py: give each its scopes there"
    assert declared - served == set(), "entries in api/routes.py that no router serves"
    assert len(declared) == len(ROUTES), "a route is declared twice"


def test_every_entry_names_known_scopes_and_only_reads_are_public() -> None:
    for spec in ROUTES:
        assert spec.scopes is None or (spec.scopes and spec.scopes <= SCOPES), spec
        assert spec.scopes is not None or spec.method == "GET", f"{spec.method} {spec.path} is public"
        assert not spec.hot or spec.method == "POST", spec


def test_the_hot_routes_are_the_routers_fast_routes_in_the_table_order() -> None:
    hot = hot_routes(predict.FAST_ROUTES + v2.FAST_ROUTES)
    assert [r.path_format for r in hot] == [spec.path for spec in ROUTES if spec.hot]
    with pytest.raises(RuntimeError, match="no fast route for"):
        hot_routes(predict.FAST_ROUTES)


@pytest.mark.parametrize(
    ("method", "path", "scopes"),
    [
        ("GET", "/healthz", None), ("HEAD", "/docs", None), ("POST", "/healthz", None), ("GET", "/v2/health/ready", None),
        ("POST", "/v1/models/m/predict", {"predict"}), ("POST", "/v1/models/m/versions/3/predict", {"predict"}),
        ("POST", "/v2/models/m/versions/3/infer", {"predict"}), ("GET", "/v2/models/m", {"predict", "read"}),
        ("POST", "/v1/jobs", {"train"}), ("POST", "/v1/jobs/", {"train"}), ("POST", "/v1/jobs/j/cancel", {"train"}),
        ("DELETE", "/v1/datasets/d", {"train"}), ("POST", "/v1/models/m/versions", {"train"}),
        ("PUT", "/v1/models/m/aliases/a", {"admin"}), ("PATCH", "/v1/models/m/versions/1", {"admin"}),
        ("GET", "/v1/models/m/versions/1/artifact", {"read"}), ("HEAD", "/v1/jobs", {"read"}),
        ("GET", "/nowhere", {"read"}), ("POST", "/nowhere", {"admin"}), ("GET", "/v2/repository", {"predict", "read"}),
        ("GET", "/ui/", None), ("GET", "/ui/static/api.js", None), ("GET", "/ui/models/m/versions/3", None), ("HEAD", "/ui/datasets", None),
        ("POST", "/ui/", None), ("GET", "/v1/whoami", {"read", "predict", "train", "admin"}), ("GET", "/redoc", {"read"}),
    ],
)  # fmt: skip
def test_concrete_paths_need_the_scopes_of_their_entry(method: str, path: str, scopes: set[str] | None) -> None:
    assert required_scopes(method, path) == (frozenset(scopes) if scopes is not None else None)


def test_only_the_uploads_are_exempt_from_the_body_cap() -> None:
    assert {(s.method, s.path) for s in ROUTES if not s.capped} == {("POST", "/v1/datasets"), ("POST", "/v1/models/{name}/versions")}
    upload = matching("POST", "/v1/models/m/versions/")
    assert upload is not None and not upload.capped


def test_the_openapi_document_gives_each_protected_operation_its_scopes(tmp_path: Path) -> None:
    with kiln_client(embedded_settings(tmp_path)) as client:
        schema = client.get("/openapi.json").json()
    infer = schema["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["x-kiln-scopes"] == ["predict"] and infer["security"] == [{"apiKey": []}]
    assert schema["paths"]["/v1/models/{name}/aliases/{alias}"]["put"]["x-kiln-scopes"] == ["admin"]
    assert "x-kiln-scopes" not in schema["paths"]["/healthz"]["get"]


def test_the_openapi_document_describes_the_v2_infer_bodies(tmp_path: Path) -> None:
    with kiln_client(embedded_settings(tmp_path)) as client:
        schema = client.get("/openapi.json").json()
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        operation = schema["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        tensor = body["properties"]["inputs"]["items"]
        assert body["required"] == ["inputs"] and set(tensor["required"]) == {"name", "shape", "datatype", "data"}
        assert tensor["properties"]["shape"]["items"] == {"type": "integer", "minimum": 0}
        assert "FP32" in tensor["properties"]["datatype"]["enum"] and "$ref" not in str(body)
        reply = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert set(reply["required"]) == {"model_name", "outputs"}
        assert operation["responses"]["400"]["content"]["application/json"]["schema"]["required"] == ["error"]


def test_a_v2_body_that_does_not_fit_the_model_is_a_400_and_the_documented_example_fits_its_schema(tmp_path: Path) -> None:
    from tests.onnx_factory import scale

    with kiln_client(embedded_settings(tmp_path)) as client:
        assert client.post("/v1/models/m/versions", files={"file": ("m.onnx", scale(2.0, 4))}).status_code == 201
        wrong = {"id": "x", "inputs": [{"name": "nope", "shape": [0], "datatype": "BOOL", "data": []}], "outputs": [{"name": "y"}]}
        response = client.post("/v2/models/m/infer", json=wrong)
        example = InferenceRequest.model_json_schema()["examples"][0]
        answer = client.post("/v2/models/m/infer", json=example)
        odd_id = client.post("/v2/models/m/infer", json=example | {"id": {}})  # echoed back, so it must be the string documented
    assert response.status_code == 400 and isinstance(response.json()["error"], str)
    assert odd_id.status_code == 400 and odd_id.json()["error"].startswith("id: expected a string")
    assert answer.status_code == 200 and InferenceResponse.model_validate(answer.json()).outputs[0].data == [1.0, 2.0, 3.0, 4.0]
