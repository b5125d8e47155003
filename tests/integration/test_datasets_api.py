"""/v1/datasets on the embedded defaults: uploads, dedupe, refusals that leave nothing behind, deletes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.config import Settings
from services.registry.entities import NewVersion
from tests.conftest import embedded_settings, kiln_client
from tests.datasets_factory import iris_csv, npz_bytes
from tests.factories import job_body


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return embedded_settings(tmp_path, max_upload_mb=1)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with kiln_client(settings) as c:
        yield c


NUMERIC_CSV = "a,b,c\n" + "".join(f"{i},{i * 0.5 + 3},{i % 2}\n" for i in range(30))


def _leftovers(settings: Settings) -> list[str]:
    """Every file under the dataset store, staging included."""
    return [str(p.relative_to(settings.datasets)) for p in settings.datasets.rglob("*") if p.is_file()]


def _upload(client: TestClient, content: str | bytes, filename: str = "iris.csv", **fields: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/datasets", files={"file": (filename, content)}, data=fields)


def test_upload_is_recorded_and_identical_upload_returns_it(client: TestClient, settings: Settings) -> None:
    first = _upload(client, iris_csv(), target="species")
    assert first.status_code == 201 and first.headers["location"] == f"/v1/datasets/{first.json()['id']}"
    again = _upload(client, iris_csv(), target="species")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    numeric = _upload(client, NUMERIC_CSV, "numbers.csv", target="c")
    other_reading = _upload(client, NUMERIC_CSV, "numbers.csv", target="b")  # same bytes, another target: another dataset
    assert numeric.json()["target"]["kind"] == "classification"
    assert other_reading.status_code == 201 and other_reading.json()["target"]["kind"] == "regression"
    listed = client.get("/v1/datasets").json()
    assert [d["source"] for d in listed["data"]].count("upload") == 3 and listed["count"] == 3 + 9
    assert client.get("/v1/datasets/digits").json()["feature_shape"] == [64]
    assert client.get(f"/v1/datasets/{first.json()['id']}").json()["sha256"] == first.json()["sha256"]
    ids = (first.json()["id"], numeric.json()["id"], other_reading.json()["id"])
    assert sorted(_leftovers(settings)) == sorted(f"{d}/{f}" for d in ids for f in ("x.npy", "y.npy"))


@pytest.mark.parametrize(
    ("content", "filename", "fields", "field", "message"),
    [
        ("a,b,y\n1,x,0\n", "d.csv", {"target": "y"}, "row 2, column 'b'", "'x' is not a number"),
        ("a,b\n1,2\n", "d.csv", {"target": "y"}, "column 'y'", "no target column 'y'"),
        ("", "d.csv", {"target": "y"}, "file", "the file is empty"),
        ("hello", "d.parquet", {}, "format", "unknown format"),
        (npz_bytes(x=np.array([object()] * 2, dtype=object), y=np.zeros(2)), "d.npz", {},
         "array 'x'", "holds Python objects"),
        ("x", "d.zip", {"image_size": "big"}, "image_size", "expected 'height,width'"),
    ],
)  # fmt: skip
def test_bad_upload_is_a_422_naming_where_and_leaves_nothing(
    client: TestClient, settings: Settings, content: str | bytes, filename: str, fields: dict, field: str, message: str
) -> None:
    response = _upload(client, content, filename, **fields)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and message in error["message"]
    assert _leftovers(settings) == []
    assert [d for d in client.get("/v1/datasets").json()["data"] if d["source"] == "upload"] == []


def test_upload_over_the_limit_is_a_413_and_leaves_nothing(client: TestClient, settings: Settings) -> None:
    big = "a,y\n" + "1,0\n" * 400_000  # 1.6 MB against a 1 MB limit
    response = _upload(client, big, target="y")
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert _leftovers(settings) == []


def test_multipart_without_a_file_part_is_refused(client: TestClient) -> None:
    response = client.post("/v1/datasets", data={"target": "y"}, files={"other": ("x", b"1")})
    assert response.status_code == 422 and response.json()["error"]["field"] == "file"
    assert client.post("/v1/datasets", json={"file": "x"}).status_code == 422


def test_delete_refuses_builtins_and_datasets_with_versions(client: TestClient, settings: Settings) -> None:
    assert client.delete("/v1/datasets/digits").status_code == 409
    assert client.delete(f"/v1/datasets/{uuid.uuid4()}").status_code == 404
    used, unused = (_upload(client, NUMERIC_CSV, target=t).json()["id"] for t in ("c", "b"))
    context = client.app.state.kiln
    with context.uow_factory() as uow:
        uow.models.add_version(NewVersion("m", None, "a" * 64, 1, {}, {}, {}, {}, {}, dataset_id=uuid.UUID(used)))
        uow.commit()
    conflict = client.delete(f"/v1/datasets/{used}")
    assert conflict.status_code == 409 and "1 registered model version" in conflict.json()["error"]["message"]
    assert client.delete(f"/v1/datasets/{unused}").status_code == 204
    assert client.get(f"/v1/datasets/{unused}").status_code == 404
    assert not (settings.datasets / unused).exists() and (settings.datasets / used).exists()


def test_jobs_on_uploads_are_checked_against_them(client: TestClient) -> None:
    dataset = _upload(client, iris_csv(), target="species").json()
    body = job_body(data={"dataset": dataset["id"], "test_split": 0.3})
    response = client.post("/v1/jobs", json=body)  # the digits MLP: 64 inputs, 10 classes
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        f"dataset '{dataset['id']}' has 4 features per sample (4,), but input_shape [64] holds 64"
    )
    body["model"] = {"input_shape": [4], "layers": [{"type": "Dense", "units": 3, "activation": "softmax"}]}
    assert client.post("/v1/jobs", json=body).status_code == 202
    missing = client.post("/v1/jobs", json=job_body(data={"dataset": str(uuid.uuid4())}))
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "data.dataset"
    builtin_split = client.post("/v1/jobs", json=job_body(data={"test_split": 0.3}))
    assert builtin_split.status_code == 422 and builtin_split.json()["error"]["field"] == "data.test_split"


def _multipart(*parts: tuple[str, str | None, bytes], close: bool = True) -> tuple[bytes, dict[str, str]]:
    boundary = "kilnboundary"
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    if close:
        body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize(
    ("parts", "close", "message"),
    [
        ((("file", "a.csv", NUMERIC_CSV.encode()), ("target", None, b"c")), False, "cut short"),
        ((("file", "a.csv", NUMERIC_CSV.encode()), ("file", "b.csv", b"x,y\n1,2\n"), ("target", None, b"c")), True, "two 'file' parts"),
    ],
)
def test_truncated_or_doubled_multipart_is_refused_and_leaves_nothing(
    client: TestClient, settings: Settings, parts: tuple, close: bool, message: str
) -> None:
    body, headers = _multipart(*parts, close=close)
    response = client.post("/v1/datasets", content=body, headers=headers)
    assert response.status_code == 422 and message in response.json()["error"]["message"]
    assert _leftovers(settings) == [] and [p for p in settings.datasets.iterdir() if p.name != ".staging"] == []
    assert list((settings.datasets / ".staging").iterdir()) == []
