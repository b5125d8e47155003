"""The seeds' transfer-learning project over HTTP on a real worker: a CNN trained on the built-in shapes becomes the
frozen base of a head trained on a small uploaded ZIP of new classes, drawn here; raw images then predict label names."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import httpx
import numpy as np
import onnx
from PIL import Image
from safetensors.numpy import load as load_safetensors

from tests.conftest import ROOT
from tests.datasets_factory import sentiment_csv
from tests.e2e.helpers import wait_for_job

CNN = json.loads((ROOT / "examples" / "cnn_shapes.json").read_text())
TRANSFER = json.loads((ROOT / "examples" / "transfer_shapes.json").read_text())
SIZE = 64


def _draw(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A ring or a cross of a random colour, size and place on a dark background: classes the base never saw."""
    image = np.zeros((SIZE, SIZE, 3), np.float32) + rng.uniform(0, 0.15)
    cy, cx, r = rng.integers(24, 40), rng.integers(24, 40), rng.integers(14, 20)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    if kind == "ring":
        mask = np.abs(np.hypot(yy - cy, xx - cx) - r) < 4
    else:
        mask = ((np.abs(yy - cy) < 4) & (np.abs(xx - cx) < r)) | ((np.abs(xx - cx) < 4) & (np.abs(yy - cy) < r))
    image[mask] = rng.uniform(0.5, 1.0, 3)
    return image


def _zip(per_class: int, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for kind in ("cross", "ring"):
            for i in range(per_class):
                png = io.BytesIO()
                Image.fromarray((_draw(kind, rng) * 255).round().astype(np.uint8)).save(png, "PNG")
                archive.writestr(f"new/{kind}/{i}.png", png.getvalue())
    return buffer.getvalue()


def test_a_frozen_shapes_cnn_learns_new_classes_from_twenty_images_each(kiln: dict) -> None:
    rng = np.random.default_rng(0)
    base_body = copy.deepcopy(CNN)
    base_body["data"]["samples"], base_body["training"]["epochs"] = 600, 6
    with httpx.Client(base_url=kiln["url"], timeout=60, headers=kiln["headers"]) as client:
        base = wait_for_job(client, client.post("/v1/jobs", json=base_body).headers["location"], timeout=300)
        assert base["state"] == "succeeded", base["error"]
        upload = client.post("/v1/datasets", files={"file": ("new.zip", _zip(20, rng))}, data={"image_size": f"{SIZE},{SIZE}"})
        assert upload.status_code in (200, 201), upload.text
        dataset = upload.json()
        body = {"model_name": "rings-and-crosses",
                "model": {"base": {"model": "cnn-shapes", "version": base["version"], "until": "flatten"},  # VGG16's recipe
                          "layers": [{"type": "Dense", "units": 32, "activation": "relu"},
                                     {"type": "Dense", "units": 2, "activation": "softmax"}]},
                "data": {"dataset": dataset["id"], "test_split": 0.25},
                "training": {"loss": "sparse_categorical_crossentropy", "epochs": 30, "batch_size": 8,
                             "optimizer": {"name": "adam", "learning_rate": 0.003}}}  # fmt: skip
        child = wait_for_job(client, client.post("/v1/jobs", json=body).headers["location"], timeout=300)
        assert child["state"] == "succeeded", child["error"]
        url = f"/v1/models/rings-and-crosses/versions/{child['version']}"
        version = client.get(url).json()
        kinds = ["cross", "ring"] * 20
        held_out = np.stack([_draw(kind, rng) for kind in kinds])
        predicted = client.post(f"{url}/predict", json={"inputs": held_out.tolist()}).json()
        weights = [
            load_safetensors(client.get(path).content)
            for path in (f"{url}/weights", f"/v1/models/cnn-shapes/versions/{base['version']}/weights")
        ]
        chain = client.get(f"{url}/lineage").json()["lineage"]
        example = wait_for_job(client, client.post("/v1/jobs", json=TRANSFER).headers["location"], timeout=300)
        bad = client.post("/v1/jobs", json=body | {"model": body["model"] | {"base": {"model": "cnn-shapes", "until": "nope"}}})
    assert version["labels"] == ["cross", "ring"]
    assert version["parent"]["model"] == "cnn-shapes" and version["parent"]["frozen"] == ["conv2d", "max_pooling2d", "flatten"]
    accuracy = float(np.mean(np.asarray(predicted["labels"]) == np.asarray(kinds)))
    print(f"\n[e2e transfer] rings and crosses from 20 images each on a frozen shapes CNN: held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.8
    mine, theirs = weights
    copied = [k for k in theirs if k.startswith("body.layers.conv2d.")]
    assert copied and all(mine[k].tobytes() == theirs[k].tobytes() for k in copied)  # the frozen base, bit for bit
    assert not any(k.startswith("body.layers.dense.") and k in mine and mine[k].shape == theirs[k].shape
                   and mine[k].tobytes() == theirs[k].tobytes() for k in theirs)  # fmt: skip  # the base's dense layers stayed behind
    assert [(c["model"], c["version"]) for c in chain] == [("rings-and-crosses", child["version"]), ("cnn-shapes", base["version"])]
    assert chain[0]["dataset"]["sha256"] != chain[1]["dataset"]["sha256"]
    assert example["state"] == "succeeded", example["error"]
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "model.base.until"


def test_a_text_base_lends_its_vocabulary_so_its_embedding_ids_mean_the_same_words(kiln: dict) -> None:
    with httpx.Client(base_url=kiln["url"], timeout=60, headers=kiln["headers"]) as client:
        text_csv = {"format": "text_csv"}
        reviews = client.post("/v1/datasets", files={"file": ("reviews.csv", sentiment_csv(seed=0))}, data=text_csv).json()
        parent = wait_for_job(client, client.post("/v1/jobs", json={
            "model_name": "reviews-lstm",
            "model": {"input_shape": [16], "layers": [
                {"name": "words", "type": "Embedding", "input_dim": 200, "output_dim": 16}, {"type": "LSTM", "units": 16},
                {"type": "Dense", "units": 2, "activation": "softmax"}]},
            "data": {"dataset": reviews["id"], "text": {"max_tokens": 200, "sequence_length": 16}},
            "training": {"loss": "sparse_categorical_crossentropy", "epochs": 4, "optimizer": {"name": "adam", "learning_rate": 0.01}},
        }).headers["location"], timeout=300)  # fmt: skip
        assert parent["state"] == "succeeded", parent["error"]
        others = client.post(
            "/v1/datasets", files={"file": ("more.csv", sentiment_csv(rows=120, seed=5))}, data={"format": "text_csv"}
        ).json()
        child = wait_for_job(client, client.post("/v1/jobs", json={
            "model_name": "reviews-head",
            "model": {"base": {"model": "reviews-lstm"}, "layers": [{"type": "Dense", "units": 2, "activation": "softmax"}]},
            "data": {"dataset": others["id"]},
            "training": {"loss": "sparse_categorical_crossentropy", "epochs": 6, "optimizer": {"name": "adam", "learning_rate": 0.01}},
        }).headers["location"], timeout=300)  # fmt: skip
        assert child["state"] == "succeeded", child["error"]
        versions = [client.get(f"/v1/models/{name}/versions/1/artifact").content for name in ("reviews-lstm", "reviews-head")]
        predicted = client.post("/v1/models/reviews-head/predict", json={"inputs": ["Wonderful superb film, loved it!"]}).json()
    vocabularies = [json.loads({p.key: p.value for p in onnx.load_from_string(v).metadata_props}["kiln.preprocessing"])["vocabulary"]
                    for v in versions]  # fmt: skip
    assert vocabularies[0] == vocabularies[1]  # the base's, not one built from the child's 120 rows
    assert predicted["labels"][0] in ("negative", "positive")
