"""The README: augmentation touches "the training split only", shown through a real job's metrics.

Two jobs with the same seed train the same CNN on digits as (8, 8, 1) images, one with strong
augmentation and one without, at a learning rate so small that no weight moves (a float32 weight
plus 1e-30 times its gradient is the same weight). Both networks therefore stay exactly the initial
one. Augmented training batches give another training loss; the validation and test splits,
never augmented, give bit-for-bit the same figures in both jobs.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.helpers import wait_for_job

STRONG = {"flip": "both", "shift": 0.3, "rotation": 90, "zoom": 0.5}


def _job(model_name: str, augmentation: dict[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {"dataset": "digits", "validation_split": 0.2} | ({"augmentation": augmentation} if augmentation else {})
    return {
        "model_name": model_name,
        "model": {"input_shape": [8, 8, 1], "layers": [
            {"type": "Conv2D", "filters": 8, "kernel_size": 3, "activation": "relu"}, {"type": "Flatten"},
            {"type": "Dense", "units": 10, "activation": "softmax"}]},
        "data": data,
        "training": {"optimizer": {"name": "sgd", "learning_rate": 1e-30}, "loss": "sparse_categorical_crossentropy",
                     "metrics": ["accuracy"], "epochs": 2, "batch_size": 64, "seed": 7},
    }  # fmt: skip


def _train(client: httpx.Client, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.headers["location"])
    assert job["state"] == "succeeded", job["error"]
    return job, client.get(f"/v1/models/{body['model_name']}/versions/{job['version']}").json()


def test_augmentation_changes_the_training_batches_and_never_the_validation_or_test_split(kiln: dict) -> None:
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        plain, plain_version = _train(client, _job("augment-off", None))
        augmented, augmented_version = _train(client, _job("augment-on", STRONG))
    print(f"\n[augmentation] train loss {plain['history'][0]['loss']:.6f} plain, {augmented['history'][0]['loss']:.6f} augmented; "
          f"val loss {plain['history'][0]['val_loss']:.6f} both")  # fmt: skip
    assert plain["history"][0]["val_loss"] == plain["history"][1]["val_loss"]  # no weight moved: the premise holds
    for off, on in zip(plain["history"], augmented["history"], strict=True):
        assert on["loss"] != off["loss"]  # the training batches were augmented
        assert on["val_loss"] == off["val_loss"]  # the validation split was not
        assert on["metrics"]["val_accuracy"] == off["metrics"]["val_accuracy"]
    for figure in ("test_loss", "test_accuracy"):  # nor the test split
        assert augmented_version["metrics"][figure] == plain_version["metrics"][figure]
