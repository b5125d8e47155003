"""Uploaded datasets end to end: a CSV with string labels, a text CSV for an LSTM, an image ZIP with augmentation."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import onnx
import pytest

from tests.datasets_factory import FILLER, NEGATIVE, POSITIVE, image_zip, iris_csv, sentiment_csv
from tests.e2e.helpers import wait_for_job


def _upload(client: httpx.Client, filename: str, content: str | bytes, **fields: str) -> dict[str, Any]:
    response = client.post("/v1/datasets", files={"file": (filename, content)}, data=fields)
    assert response.status_code in (200, 201), response.text
    return response.json()


def _train(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.headers["location"])
    assert job["state"] == "succeeded", job["error"]
    return job


@pytest.fixture
def client(kiln: dict) -> httpx.Client:
    with httpx.Client(base_url=kiln["url"], timeout=60, headers=kiln["headers"]) as c:
        yield c


def test_csv_with_string_labels_trains_and_predict_returns_label_names(kiln: dict, client: httpx.Client) -> None:
    dataset = _upload(client, "iris.csv", iris_csv(), target="species", name="iris (uploaded)")
    assert dataset["target"] == {"kind": "classification", "class_names": ["setosa", "versicolor", "virginica"]}
    assert dataset["feature_shape"] == [4] and dataset["n_samples"] == 150
    job = _train(client, {
        "model_name": "iris-upload",
        "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 16, "activation": "relu"},
                                                 {"type": "Dense", "units": 3, "activation": "softmax"}]},
        "data": {"dataset": dataset["id"], "validation_split": 0.2, "test_split": 0.2, "normalization": "standard"},
        "training": {"optimizer": {"name": "adam", "learning_rate": 0.01}, "loss": "sparse_categorical_crossentropy", "epochs": 60},
    })  # fmt: skip
    version = client.get(f"/v1/models/iris-upload/versions/{job['version']}").json()
    assert version["labels"] == ["setosa", "versicolor", "virginica"]
    assert version["metrics"]["test_accuracy"] >= 0.9
    assert version["dataset"]["sha256"] == dataset["sha256"]
    raw = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]  # raw centimetres: normalisation is in the graph
    predicted = client.post(f"/v1/models/iris-upload/versions/{job['version']}/predict", json={"inputs": raw}).json()
    assert predicted["labels"] == ["setosa", "virginica", "versicolor"]
    np.testing.assert_allclose(np.sum(predicted["outputs"], axis=1), 1.0, atol=1e-5)
    artifact = kiln["data_dir"] / "artifacts" / version["artifact"]["sha256"][:2] / f"{version['artifact']['sha256']}.onnx"
    metadata = {p.key: p.value for p in onnx.load(str(artifact)).metadata_props}
    assert json.loads(metadata["kiln.labels"]) == ["setosa", "versicolor", "virginica"]
    assert json.loads(metadata["kiln.normalization"])["kind"] == "standard"
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 409  # a registered version learnt from it


def test_text_csv_trains_an_lstm_that_reads_raw_strings(client: httpx.Client) -> None:
    dataset = _upload(client, "reviews.csv", sentiment_csv(), format="text_csv")
    assert dataset["dtype"] == "text" and dataset["target"]["class_names"] == ["negative", "positive"]
    job = _train(client, {
        "model_name": "sentiment-lstm",
        "model": {"input_shape": [16], "layers": [{"type": "Embedding", "input_dim": 200, "output_dim": 16},
                                                  {"type": "LSTM", "units": 16}, {"type": "Dense", "units": 1, "activation": "sigmoid"}]},
        "data": {"dataset": dataset["id"], "validation_split": 0.1, "text": {"max_tokens": 200, "sequence_length": 16}},
        "training": {"optimizer": {"name": "adam", "learning_rate": 0.01}, "loss": "binary_crossentropy", "epochs": 8},
    })  # fmt: skip
    version = client.get(f"/v1/models/sentiment-lstm/versions/{job['version']}").json()
    words = len(POSITIVE) + len(NEGATIVE) + len(FILLER)
    assert version["preprocessing"] == {"kind": "text", "sequence_length": 16, "vocabulary_size": words + 2}  # + padding, unknown
    assert version["metrics"]["test_accuracy"] >= 0.9
    reviews = ["A wonderful film, I loved it", "Boring plot and awful actors", "Really the worst movie"]
    predicted = client.post(f"/v1/models/sentiment-lstm/versions/{job['version']}/predict", json={"inputs": reviews})
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["labels"] == ["positive", "negative", "negative"]
    wrong = client.post(f"/v1/models/sentiment-lstm/versions/{job['version']}/predict", json={"inputs": [[1, 2, 3]]})
    assert wrong.status_code == 422 and "list of strings" in wrong.json()["error"]["message"]


def test_image_zip_trains_a_cnn_with_augmentation(client: httpx.Client) -> None:
    dataset = _upload(client, "pets.zip", image_zip(per_class=20), image_size="16,16")
    assert dataset["feature_shape"] == [16, 16, 3] and dataset["target"]["class_names"] == ["day", "night"]
    job = _train(client, {
        "model_name": "day-night",
        "model": {"input_shape": [16, 16, 3], "layers": [
            {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"}, {"type": "GlobalAveragePooling2D"},
            {"type": "Dense", "units": 2, "activation": "softmax"}]},
        "data": {"dataset": dataset["id"], "test_split": 0.25, "normalization": "minmax",
                 "augmentation": {"flip": "horizontal", "shift": 0.1, "rotation": 10, "zoom": 0.1}},
        "training": {"optimizer": {"name": "adam", "learning_rate": 0.01}, "loss": "sparse_categorical_crossentropy", "epochs": 20,
                     "batch_size": 8},
    })  # fmt: skip
    version = client.get(f"/v1/models/day-night/versions/{job['version']}").json()
    assert version["labels"] == ["day", "night"] and version["metrics"]["test_accuracy"] >= 0.8
