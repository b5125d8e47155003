"""The API on the S3 store, against a real S3 server: replicas that share only the bucket and the registry, serving
from their caches while S3 is away, and a clear 503 (never a 500) for what does need S3 then."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.config import Settings
from tests.conftest import embedded_settings, kiln_client
from tests.datasets_factory import iris_csv
from tests.onnx_factory import linear_softmax
from tests.s3_server import WeedServer


@pytest.fixture
def server(tmp_path: Path) -> WeedServer:
    server = WeedServer(tmp_path / "s3")
    server.start()
    yield server
    server.stop()


def replica(tmp_path: Path, name: str, server: WeedServer, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """An API replica's settings: the shared registry and bucket, local folders of its own."""
    for key, value in server.env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    shared_db = f"sqlite:///{tmp_path / 'kiln.db'}"
    return embedded_settings(tmp_path / name, database_url=shared_db, artifact_url=f"s3://{bucket}/api",
                             s3_endpoint_url=server.endpoint)  # fmt: skip


def test_replicas_share_versions_through_s3_and_serve_from_their_cache_while_it_is_away(
    server: WeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = server.new_bucket()
    weights = np.eye(3, dtype=np.float32)
    with kiln_client(replica(tmp_path, "a", server, bucket, monkeypatch)) as first:
        uploaded = first.post("/v1/models/eye/versions", files={"file": ("m.onnx", linear_softmax(weights))})
        assert uploaded.status_code == 201, uploaded.text
        sha256 = uploaded.json()["artifact"]["sha256"]
    assert f"api/artifacts/{sha256[:2]}/{sha256}.onnx" in server.keys(bucket)

    rows = {"inputs": [[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]}
    with kiln_client(replica(tmp_path, "b", server, bucket, monkeypatch)) as warm, \
            kiln_client(replica(tmp_path, "c", server, bucket, monkeypatch)) as cold:  # fmt: skip
        answer = warm.post("/v1/models/eye/predict", json=rows)  # fetched from S3, checked, cached
        assert answer.status_code == 200, answer.text
        assert np.asarray(answer.json()["outputs"]).argmax(axis=1).tolist() == [0, 2]
        listed = cold.get("/v1/datasets").json()["count"]  # the built-in ones
        server.kill()
        for _ in range(20):
            assert warm.post("/v1/models/eye/predict", json=rows).status_code == 200  # S3 is out of the path
        refused = cold.post("/v1/models/eye/predict", json=rows)  # this replica never loaded it
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "store_unavailable" and refused.headers["retry-after"] == "2"
        download = cold.get("/v1/models/eye/versions/1/artifact")
        assert download.status_code == 503 and download.json()["error"]["code"] == "store_unavailable"
        upload = cold.post("/v1/datasets", files={"file": ("iris.csv", iris_csv())}, data={"target": "species"})
        assert upload.status_code == 503, upload.text
        assert cold.get("/v1/datasets").json()["count"] == listed  # nothing recorded
        staged = tmp_path / "c" / "datasets"
        assert [p for p in staged.rglob("*") if p.is_file()] == []  # and nothing left on this host
