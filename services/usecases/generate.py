"""A GAN generator's samples: latent vectors drawn from a seed (and classes, for a conditional GAN), run through the version."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from services.data.png import grid_png, image_layout
from services.errors import Conflict, InvalidInput
from services.registry.entities import ModelVersion

MAX_SAMPLES = 1024


def generation_of(version: ModelVersion) -> dict[str, Any]:
    """The version's generation settings; a Conflict saying what the version is when it is not a generator."""
    if version.task == "generator" and version.generation:
        return version.generation
    what = (
        f"a {version.task}" if version.task else ("an uploaded ONNX model" if version.job_id is None else "a model with no recorded task")
    )
    raise Conflict(f"version {version.version} of '{version.model_name}' is {what}: generate needs a GAN's generator "
                   '(train one with "kind": "gan")', field="version")  # fmt: skip


def latent_feeds(
    generation: dict[str, Any], n: int, seed: int | None, labels: list[Any] | None
) -> tuple[dict[str, np.ndarray], int, list[int] | None]:
    """The generator's inputs for `n` samples: z from `seed` (a fresh one when None), and the class indices of a conditional
    GAN (`labels`, as indices or class names; every class in turn when not given). Returns them with the seed and classes."""
    seed = secrets.randbelow(2**31) if seed is None else seed
    z = np.random.default_rng(seed).standard_normal((n, generation["latent_dim"])).astype(np.float32)
    classes = int(generation.get("classes") or 0)
    if not classes:
        if labels is not None:
            raise InvalidInput("labels: this generator is not conditional; it takes no labels", field="labels")
        return {"z": z}, seed, None
    indices = [i % classes for i in range(n)] if labels is None else _class_indices(labels, n, classes, generation.get("labels"))
    return {"z": z, "label": np.asarray(indices, dtype=np.int64).reshape(n, 1)}, seed, indices


def _class_indices(labels: list[Any], n: int, classes: int, names: list[str] | None) -> list[int]:
    if len(labels) != n:
        raise InvalidInput(f"labels: expected {n} (one per sample, n={n}), got {len(labels)}", field="labels")
    indices = []
    for position, label in enumerate(labels):
        if isinstance(label, str) and names and label in names:
            indices.append(names.index(label))
        elif isinstance(label, int) and not isinstance(label, bool) and 0 <= label < classes:
            indices.append(label)
        else:
            named = f" or one of {names}" if names else ""
            raise InvalidInput(
                f"labels[{position}]: expected a class index 0..{classes - 1}{named}, got {label!r}", field=f"labels[{position}]"
            )
    return indices


def samples_png(generation: dict[str, Any], samples: np.ndarray) -> bytes:
    """The samples as one PNG grid, the training data's range mapped to black..white."""
    if image_layout(tuple(samples.shape[1:])) is None:
        raise InvalidInput(f"samples of shape {list(samples.shape[1:])} are not images: ask for application/json", field="accept")
    low, high = generation.get("value_range") or (0.0, 1.0)
    return grid_png(samples, low=low, high=high)
