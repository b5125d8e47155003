"""Job bodies as users write them."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.conftest import ROOT

DIGITS_MLP: dict[str, Any] = json.loads((ROOT / "examples" / "digits_mlp.json").read_text())


def job_body(**overrides: Any) -> dict[str, Any]:
    """The digits example with top-level sections replaced or merged: `job_body(training={"epochs": 2})`."""
    body = copy.deepcopy(DIGITS_MLP)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def tiny_job(**overrides: Any) -> dict[str, Any]:
    """A job that trains in well under a second."""
    return job_body(training={"epochs": 2, **overrides.pop("training", {})}, **overrides)


def gan_body(*, conditional: bool = False, epochs: int = 3, **sections: Any) -> dict[str, Any]:
    """A small dense GAN on digits (8x8, values 0-16): fast enough for unit tests."""
    classes = 10 if conditional else 0
    body: dict[str, Any] = {
        "model_name": "tiny-gan",
        "kind": "gan",
        "model": {
            "latent_dim": 8,
            "conditional": conditional,
            "generator": {
                "input_shape": [8 + classes],
                "layers": [{"type": "Dense", "units": 32, "activation": "leaky_relu"}, {"type": "Dense", "units": 64}],
            },
            "discriminator": {
                "input_shape": [64 + classes],
                "layers": [
                    {"type": "Dense", "units": 32, "activation": "leaky_relu"},
                    {"type": "Dropout", "rate": 0.2},
                    {"type": "Dense", "units": 1},
                ],
            },
        },  # fmt: skip
        "data": {"dataset": "digits"},
        "training": {"optimizer": {"name": "adam", "learning_rate": 0.002, "beta_1": 0.5}, "epochs": epochs, "batch_size": 64},
    }
    for name, section in sections.items():
        body[name] = body[name] | section if isinstance(body.get(name), dict) else section
    return body
