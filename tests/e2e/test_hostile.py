"""Hostile input over HTTP: malformed, oversized and adversarial requests on every route family.

Each case goes to a real API process (the PostgreSQL + Redis stack) and must get a 4xx JSON error in
its route's shape (Kiln's `{"error": {"code", "message"}}`, or v2's `{"error": "..."}`), within a
client timeout: never a 5xx, never a hang. After each case the data folder holds the same files as
before and the registry the same jobs, datasets, models and versions.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.e2e.helpers import wait_for_job
from tests.factories import job_body
from tests.onnx_factory import linear_softmax, malformed, unknown_op, with_external_data

ONE, TWO = "hostile-one", "hostile-two"  # a (N, 3) -> (N, 2) classifier; a model of two inputs
V1, V2 = f"/v1/models/{ONE}/versions/1/predict", f"/v2/models/{ONE}/versions/1/infer"
V1_TWO = f"/v1/models/{TWO}/versions/1/predict"
UPLOAD = "/v1/models/hostile-upload/versions"
JSON = {"content-type": "application/json"}
TIMEOUT = httpx.Timeout(30.0)
ROW = [0.5, 1.0, -1.0]
FEATURES = {"name": "features", "shape": [1, 3], "datatype": "FP32", "data": ROW}
DEEP = ("[" * 100_000 + "]" * 100_000).encode()
DENSE = {"type": "Dense", "activation": "relu"}


@dataclass(frozen=True)
class Case:
    """One hostile request: its method and path, and what httpx sends (json, content, files, headers)."""

    method: str
    path: str
    send: dict[str, Any] = field(default_factory=dict)
    auth: bool = True  # False: no Authorization of the admin key's (headers may bring one of their own)
    status: int | None = None  # the exact status, where one is owed; else any 4xx
    message: str | None = None  # a pattern the error message must match


def _raw(body: bytes | str, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": body.encode() if isinstance(body, str) else body, "headers": {"content-type": content_type}}


def _v2(**body: Any) -> dict[str, Any]:
    return {"json": {"inputs": [FEATURES], **body}}


def _tensor(**overrides: Any) -> dict[str, Any]:
    return {"json": {"inputs": [FEATURES | overrides]}}


def _binary(header: dict[str, Any], tail: bytes, length: str | None = None) -> dict[str, Any]:
    raw = json.dumps(header).encode()
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": length or str(len(raw))}
    return {"content": raw + tail, "headers": headers}


def _binary_features(size: int) -> dict[str, Any]:
    return {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}


def _over_the_cap(mib: int = 70) -> Iterator[bytes]:
    """A chunked JSON body past the default KILN_MAX_BODY_MB of 64, made while it is sent."""
    yield b'{"inputs": ['
    chunk = b"[0.5,0.5,0.5]," * (2**20 // 14)
    for _ in range(mib):
        yield chunk
    yield b"[0.5,0.5,0.5]]}"


def _npz(**arrays: Any) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _file(data: bytes, filename: str = "upload.bin", **fields: str) -> dict[str, Any]:
    return {"files": {"file": (filename, data)}, "data": fields}


def _job(**overrides: Any) -> dict[str, Any]:
    return {"json": job_body(**overrides)}


def _auth(value: str | bytes) -> dict[str, Any]:
    return {"json": {"inputs": [ROW]}, "headers": {"authorization": value}}


HUGE_DENSE = {"input_shape": [64], "layers": [DENSE | {"units": 65536}, DENSE | {"units": 65536},
                                              {"type": "Dense", "units": 10, "activation": "softmax"}]}  # fmt: skip
TWO_INPUTS = r"(?s)(?=.*left_operand)(?=.*right_operand)"  # the message names both of the model's inputs

V2_CASES = {
    "v2-inputs-are-numbers": Case("POST", V2, {"json": {"inputs": [1, 2]}}, status=400),
    "v2-inputs-an-object": Case("POST", V2, {"json": {"inputs": {"features": ROW}}}),
    "v2-inputs-missing": Case("POST", V2, {"json": {"outputs": []}}),
    "v2-inputs-empty": Case("POST", V2, {"json": {"inputs": []}}),
    "v2-datatype-a-list": Case("POST", V2, _tensor(datatype=["FP32"]), message="datatype"),
    "v2-datatype-unknown": Case("POST", V2, _tensor(datatype="FP99"), message="datatype"),
    "v2-parameters-a-string": Case("POST", V2, _v2(parameters="fast"), message="parameters"),
    "v2-input-parameters-a-string": Case("POST", V2, _tensor(parameters="fast"), message="parameters"),
    "v2-outputs-are-strings": Case("POST", V2, _v2(outputs=["x"]), message="outputs"),
    "v2-output-unknown-name": Case("POST", V2, _v2(outputs=[{"name": "nope"}]), message="nope"),
    "v2-shape-negative-dim": Case("POST", V2, _tensor(shape=[-1, 3]), message="shape"),
    "v2-shape-huge-product": Case("POST", V2, _tensor(shape=[2**31, 2**31, 2**31]), message="shape"),
    "v2-shape-a-float": Case("POST", V2, _tensor(shape=[1.5, 2]), message="shape"),
    "v2-shape-booleans": Case("POST", V2, _tensor(shape=[True, 3]), message="shape"),
    "v2-shape-a-string": Case("POST", V2, _tensor(shape="1,3"), message="shape"),
    "v2-data-too-short": Case("POST", V2, _tensor(data=[1.0])),
    "v2-data-booleans": Case("POST", V2, _tensor(data=[True, True, True])),
    "v2-data-strings": Case("POST", V2, _tensor(data=["a", "b", "c"])),
    "v2-data-nested-ragged": Case("POST", V2, _tensor(data=[[1.0, 2.0], [3.0]])),
    "v2-name-a-number": Case("POST", V2, _tensor(name=7)),
    "v2-id-an-object": Case("POST", V2, _v2(id={"a": 1})),
    "v2-nan-literal": Case("POST", V2, _raw('{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[NaN,1,2]}]}')),
    "v2-deeply-nested": Case("POST", V2, _raw(b'{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":' + DEEP + b"}]}")),
    "v2-not-json": Case("POST", V2, _raw("{inputs: nope")),
    "v2-invalid-utf8": Case("POST", V2, _raw(b'{"inputs": "\xff\xfe\xfd"}')),
    "v2-empty-body": Case("POST", V2, _raw(b"")),
    "v2-body-a-list": Case("POST", V2, {"json": [FEATURES]}),
    "v2-xml-body": Case("POST", V2, _raw("<inputs><x>1</x></inputs>", "application/xml")),
    "v2-binary-header-length-too-long": Case("POST", V2, _binary(_binary_features(12), b"\0" * 12, length="99999")),
    "v2-binary-header-length-not-a-number": Case("POST", V2, _binary(_binary_features(12), b"\0" * 12, length="twelve")),
    "v2-binary-header-length-negative": Case("POST", V2, _binary(_binary_features(12), b"\0" * 12, length="-5")),
    "v2-binary-data-size-past-the-body": Case("POST", V2, _binary(_binary_features(4096), b"\0" * 12)),
    "v2-binary-data-size-negative": Case("POST", V2, _binary(_binary_features(-12), b"\0" * 12)),
    "v2-binary-trailing-bytes": Case("POST", V2, _binary(_binary_features(12), b"\0" * 40)),
    "v2-unknown-model": Case("POST", "/v2/models/no-such-model/infer", _v2(), status=404),
    "v2-version-not-a-number": Case("POST", f"/v2/models/{ONE}/versions/abc/infer", _v2()),
    "v2-version-huge": Case("POST", f"/v2/models/{ONE}/versions/99999999999999999999999/infer", _v2()),
    "v2-metadata-unknown-model": Case("GET", "/v2/models/no-such-model", status=404),
    "v2-metadata-version-negative": Case("GET", f"/v2/models/{ONE}/versions/-1"),
    "v2-metadata-version-huge": Case("GET", f"/v2/models/{ONE}/versions/99999999999999999999999"),
    "v2-no-key": Case("POST", V2, _v2(), auth=False, status=401),
}

V1_CASES = {
    "v1-booleans": Case("POST", V1, {"json": {"inputs": [[True, True, True]]}}, status=422),
    "v1-strings": Case("POST", V1, {"json": {"inputs": [["a", "b", "c"]]}}),
    "v1-ragged": Case("POST", V1, {"json": {"inputs": [ROW, [1.0]]}}),
    "v1-wrong-width": Case("POST", V1, {"json": {"inputs": [[1.0, 2.0]]}}),
    "v1-inputs-null": Case("POST", V1, {"json": {"inputs": None}}),
    "v1-inputs-missing": Case("POST", V1, {"json": {}}),
    "v1-inputs-empty": Case("POST", V1, {"json": {"inputs": []}}),
    "v1-body-a-list": Case("POST", V1, {"json": [ROW]}),
    "v1-nan-literal": Case("POST", V1, _raw('{"inputs": [[NaN, 1, 2]]}')),
    "v1-infinity-literal": Case("POST", V1, _raw('{"inputs": [[Infinity, 1, 2]]}')),
    "v1-huge-number": Case("POST", V1, _raw('{"inputs": [[1e999, 1, 2]]}')),
    "v1-deeply-nested": Case("POST", V1, _raw(b'{"inputs": ' + DEEP + b"}")),
    "v1-not-json": Case("POST", V1, _raw("inputs=1,2,3", "application/x-www-form-urlencoded")),
    "v1-invalid-utf8": Case("POST", V1, _raw(b'{"inputs": [["\xc3\x28"]]}')),
    "v1-empty-body": Case("POST", V1, _raw(b"")),
    "v1-over-the-body-cap": Case("POST", V1, {"content": _over_the_cap(), "headers": JSON}, status=413),
    "v1-two-inputs-as-a-list": Case("POST", V1_TWO, {"json": {"inputs": [ROW]}}, status=422, message=TWO_INPUTS),
    "v1-two-inputs-wrong-names": Case("POST", V1_TWO, {"json": {"inputs": {"x": [ROW], "y": [ROW]}}}, status=422, message=TWO_INPUTS),
    "v1-two-inputs-one-missing": Case("POST", V1_TWO, {"json": {"inputs": {"left_operand": [ROW]}}}, status=422, message=TWO_INPUTS),
    "v1-two-inputs-rows-differ": Case("POST", V1_TWO, {"json": {"inputs": {"left_operand": [ROW], "right_operand": [ROW, ROW]}}}),
    "v1-unknown-model": Case("POST", "/v1/models/no-such-model/predict", {"json": {"inputs": [ROW]}}, status=404),
    "v1-version-zero": Case("POST", f"/v1/models/{ONE}/versions/0/predict", {"json": {"inputs": [ROW]}}),
    "v1-version-not-a-number": Case("POST", f"/v1/models/{ONE}/versions/one/predict", {"json": {"inputs": [ROW]}}),
    "v1-unknown-alias": Case("POST", f"/v1/models/{ONE}/aliases/nope/predict", {"json": {"inputs": [ROW]}}, status=404),
}

AUTH_CASES = {
    "auth-missing": Case("POST", V1, {"json": {"inputs": [ROW]}}, auth=False, status=401),
    "auth-garbage-token": Case("POST", V1, _auth("Bearer kiln_not-a-real-key"), auth=False, status=401),
    "auth-empty-bearer": Case("POST", V1, _auth("Bearer"), auth=False, status=401),
    "auth-basic-scheme": Case("POST", V1, _auth("Basic YWRtaW46YWRtaW4="), auth=False, status=401),
    "auth-no-scheme": Case("POST", V1, _auth("justsomegarbage"), auth=False, status=401),
    "auth-huge-header": Case("POST", V1, _auth("Bearer " + "k" * 12_000), auth=False, status=401),
    "auth-latin-1-bytes": Case("POST", V1, _auth("Bearer cl\xe9-\xfc\xdf".encode("latin-1")), auth=False, status=401),
    "auth-invalid-utf8-bytes": Case("POST", V1, _auth(b"Bearer \xc3\x28\xff"), auth=False, status=401),
    "auth-garbage-on-jobs": Case(
        "POST", "/v1/jobs", {"json": job_body(), "headers": {"authorization": "Bearer x"}}, auth=False, status=401
    ),  # fmt: skip
    "auth-garbage-on-v2": Case("POST", V2, _v2() | {"headers": {"authorization": b"Bearer \x80\x81garbage"}}, auth=False, status=401),
}

JOB_CASES = {
    "jobs-dense-65536-over-the-parameter-budget": Case(
        "POST", "/v1/jobs", _job(model=HUGE_DENSE), status=422, message=r"4,29\d,\d{3},\d{3}.*KILN_MAX_PARAMETERS"
    ),  # fmt: skip
    "jobs-units-astronomical": Case("POST", "/v1/jobs", _job(model={"input_shape": [64], "layers": [DENSE | {"units": 10**30}]})),
    "jobs-units-boolean": Case("POST", "/v1/jobs", _job(model={"input_shape": [64], "layers": [DENSE | {"units": True}]})),
    "jobs-layers-a-string": Case("POST", "/v1/jobs", _job(model={"input_shape": [64], "layers": "Dense"})),
    "jobs-input-shape-negative": Case("POST", "/v1/jobs", _job(model={"input_shape": [-64], "layers": [DENSE | {"units": 4}]})),
    "jobs-epochs-negative": Case("POST", "/v1/jobs", _job(training={"epochs": -1})),
    "jobs-epochs-boolean": Case("POST", "/v1/jobs", _job(training={"epochs": True})),
    "jobs-learning-rate-nan": Case("POST", "/v1/jobs", _raw(json.dumps(job_body(training={"learning_rate": float("nan")})))),
    "jobs-deeply-nested": Case("POST", "/v1/jobs", _raw(b'{"model": ' + DEEP + b"}")),
    "jobs-not-json": Case("POST", "/v1/jobs", _raw(b"\x00\x01\x02")),
    "jobs-empty-body": Case("POST", "/v1/jobs", _raw(b"")),
    "jobs-invalid-utf8": Case("POST", "/v1/jobs", _raw(b'{"model_name": "\xff"}')),
    "jobs-unknown-job": Case("GET", f"/v1/jobs/{uuid.uuid4()}", status=404),
    "jobs-id-not-a-uuid": Case("GET", "/v1/jobs/not-a-uuid", status=422),
    "jobs-cancel-unknown": Case("POST", f"/v1/jobs/{uuid.uuid4()}/cancel", status=404),
    "jobs-limit-negative": Case("GET", "/v1/jobs?limit=-1", status=422),
    "jobs-offset-huge": Case("GET", "/v1/jobs?offset=99999999999999999999", status=422),
    "jobs-state-unknown": Case("GET", "/v1/jobs?state=exploded", status=422),
}

UPLOAD_CASES = {
    "onnx-op-onnxruntime-cannot-run": Case("POST", UPLOAD, _file(unknown_op(), "m.onnx"), status=422, message="NoSuchOp"),
    "onnx-garbage-bytes": Case("POST", UPLOAD, _file(b"\x08\x07not onnx at all" * 100, "m.onnx")),
    "onnx-empty-file": Case("POST", UPLOAD, _file(b"", "m.onnx")),
    "onnx-dangling-tensor": Case("POST", UPLOAD, _file(malformed(), "m.onnx")),
    "onnx-external-data-path": Case("POST", UPLOAD, _file(with_external_data(linear_softmax(np.eye(2))), "m.onnx")),
    "onnx-labels-not-json": Case("POST", UPLOAD, _file(linear_softmax(np.eye(2)), "m.onnx", labels="[cat, dog")),
    "onnx-labels-an-object": Case("POST", UPLOAD, _file(linear_softmax(np.eye(2)), "m.onnx", labels='{"a": 1}')),
    "onnx-no-file-field": Case("POST", UPLOAD, {"files": {"other": ("m.onnx", b"x")}}),
    "onnx-json-body": Case("POST", UPLOAD, {"json": {"file": "bW9kZWw="}}),
    "onnx-multipart-boundary-lie": Case("POST", UPLOAD, _raw(b"--nope\r\n\r\nx", "multipart/form-data; boundary=elsewhere")),
    "onnx-bad-model-name": Case("POST", "/v1/models/bad%20name%21/versions", _file(linear_softmax(np.eye(2)), "m.onnx")),
    "datasets-json-body": Case("POST", "/v1/datasets", {"json": {"x": [[1]], "y": [1]}}),
    "datasets-garbage-file": Case("POST", "/v1/datasets", _file(b"PK\x03\x04 but not a zip" * 10, "d.npz", name="junk")),
    "datasets-empty-file": Case("POST", "/v1/datasets", _file(b"", "d.npz", name="empty")),
    "datasets-x-and-y-differ": Case(
        "POST", "/v1/datasets", _file(_npz(x=np.zeros((4, 3), np.float32), y=np.zeros(3, np.int64)), "d.npz", name="ragged")
    ),  # fmt: skip
    "datasets-missing-y": Case("POST", "/v1/datasets", _file(_npz(x=np.zeros((4, 3), np.float32)), "d.npz", name="no-y")),
    "datasets-pickled-objects": Case(
        "POST", "/v1/datasets", _file(_npz(x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, np.int64)), "d.npz", name="pickle")
    ),  # fmt: skip
    "datasets-x-with-nan": Case(
        "POST", "/v1/datasets", _file(_npz(x=np.full((4, 3), np.nan, np.float32), y=np.zeros(4, np.int64)), "d.npz", name="nan")
    ),  # fmt: skip
    "datasets-boundary-lie": Case(
        "POST", "/v1/datasets", _raw(b"--a\r\nContent-Disposition: form-data; name=file\r\n\r\nxx", "multipart/form-data; boundary=a")
    ),  # fmt: skip
    "datasets-id-unknown": Case("GET", "/v1/datasets/not-a-uuid", status=404),
    "datasets-id-a-path": Case("GET", "/v1/datasets/..%2F..%2Fetc"),
    "datasets-delete-unknown": Case("DELETE", f"/v1/datasets/{uuid.uuid4()}", status=404),
    "models-serving-batch-zero": Case("PATCH", f"/v1/models/{ONE}/versions/1", {"json": {"max_batch_size": 0}}, status=422),
    "models-serving-batch-boolean": Case("PATCH", f"/v1/models/{ONE}/versions/1", {"json": {"max_batch_size": True}}, status=422),
    "models-alias-to-missing-version": Case("PUT", f"/v1/models/{ONE}/aliases/prod", {"json": {"version": 999}}),
    "models-artifact-missing-version": Case("GET", f"/v1/models/{ONE}/versions/999/artifact", status=404),
}

CASES = V2_CASES | V1_CASES | AUTH_CASES | JOB_CASES | UPLOAD_CASES


def _two_input_model() -> bytes:
    """(N, 3) `left_operand` and `right_operand` -> their sum: names no English sentence contains by chance."""
    a, b = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in ("left_operand", "right_operand"))
    y = helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Add", ["left_operand", "right_operand"], ["total"])], "two", [a, b], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture(scope="module")
def api(kiln: dict) -> dict:
    """The shared stack with the two models this module aims at, uploaded once."""
    uploads = {ONE: linear_softmax(np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]])), TWO: _two_input_model()}
    with httpx.Client(base_url=kiln["url"], headers=kiln["headers"], timeout=TIMEOUT) as client:
        for name, model in uploads.items():
            if client.get(f"/v1/models/{name}/versions/1").status_code != 200:
                response = client.post(f"/v1/models/{name}/versions", files={"file": ("m.onnx", model)})
                assert response.status_code == 201, response.text
    return kiln


def _on_disk(data_dir: Path) -> set[str]:
    """Every file and folder under the data folder but the processes' logs."""
    return {str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.suffix != ".log"}


def _registry(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    """How many jobs, datasets, models and versions the registry holds, as the API reports them."""
    models = client.get("/v1/models", headers=headers).json()["data"]
    jobs = client.get("/v1/jobs", params={"limit": 1}, headers=headers).json()["count"]
    datasets = client.get("/v1/datasets", headers=headers).json()["count"]
    return {"jobs": jobs, "datasets": datasets, "versions": {m["name"]: m["version_count"] for m in models}}


def _undo(client: httpx.Client, headers: dict[str, str], response: httpx.Response) -> None:
    """A job or dataset a case should not have made is cancelled or deleted, so it cannot spill into the next case."""
    location = response.headers.get("location", "")
    if response.status_code == 202 and location.startswith("/v1/jobs/"):
        client.post(f"{location}/cancel", headers=headers)
        client.headers.update(headers)
        wait_for_job(client, location)
    elif response.status_code in (200, 201) and location.startswith("/v1/datasets/"):
        client.delete(location, headers=headers)


def _check_error(case: Case, response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if case.status is not None:
        assert response.status_code == case.status, response.text[:500]
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers.get("content-type")
    error = response.json()["error"]
    if case.path.startswith("/v2"):
        assert isinstance(error, str) and error, response.text[:500]
        message = error
    else:
        assert isinstance(error, dict) and isinstance(error.get("code"), str), response.text[:500]
        assert isinstance(error.get("message"), str) and error["message"], response.text[:500]
        message = error["message"]
    if case.message is not None:
        assert re.search(case.message, message), message


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_a_hostile_request_gets_a_4xx_json_error_and_leaves_nothing_behind(api: dict, case: Case) -> None:
    with httpx.Client(base_url=api["url"], timeout=TIMEOUT) as client:
        files_before, registry_before = _on_disk(api["data_dir"]), _registry(client, api["headers"])
        send = dict(case.send)
        headers = (api["headers"] if case.auth else {}) | send.pop("headers", {})
        request = client.build_request(case.method, case.path, headers=headers, **send)
        response = client.send(request)
        try:
            _check_error(case, response)
        finally:
            _undo(client, api["headers"], response)
            assert _registry(client, api["headers"]) == registry_before
            assert _on_disk(api["data_dir"]) == files_before


def test_a_two_input_model_is_served_on_v1_by_input_name(api: dict) -> None:
    with httpx.Client(base_url=api["url"], headers=api["headers"], timeout=TIMEOUT) as client:
        response = client.post(V1_TWO, json={"inputs": {"left_operand": [ROW], "right_operand": [[1.0, 1.0, 1.0]]}})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(np.asarray(response.json()["outputs"]), [[1.5, 2.0, 0.0]])


def test_there_are_at_least_forty_hostile_cases() -> None:
    assert len(CASES) >= 40 and {c.path.split("/")[1] for c in CASES.values()} == {"v1", "v2"}
