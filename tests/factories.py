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
