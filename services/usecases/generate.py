"""A GAN generator's samples: latent vectors drawn from a seed (and classes, for a conditional GAN), run through the version."""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np

from services.data.png import grid_png, image_layout
from services.errors import Conflict, InvalidInput, NotAcceptable
from services.registry.entities import ModelVersion
from services.usecases.detect import what_it_is

MAX_SAMPLES = 1024
MAX_VALUES = 2**22  # values one generate answer may hold (about 80 MB of JSON): n x the sample's size


def generation_of(version: ModelVersion) -> dict[str, Any]:
    """The version's generation settings; a Conflict saying what the version is when it is not a generator."""
    if version.task == "generator" and version.generation:
        return version.generation
    raise Conflict(f"version {version.version} of '{version.model_name}' is {what_it_is(version)}: generate needs a GAN's generator "
                   '(train one with "kind": "gan")', field="version")  # fmt: skip


def check_size(generation: dict[str, Any], n: int) -> None:
    """A 422 naming the most samples this generator may give at once, when `n` of them would be too large an answer."""
    size = math.prod(generation.get("sample_shape") or [1])
    if n * size > MAX_VALUES:
        raise InvalidInput(f"n: {n} samples of {size:,} values are over {MAX_VALUES:,} values; ask for at most {MAX_VALUES // size}",
                           field="n")  # fmt: skip


def wants_png(accept: str, generation: dict[str, Any]) -> bool:
    """Whether the Accept header prefers image/png to JSON (q-values honoured); a 406 when it accepts only PNG of samples
    that are not images."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *parameters = (p.strip() for p in part.split(";"))
        q = next((p[2:] for p in parameters if p.startswith("q=")), "1")
        try:
            weights[media.lower()] = float(q)
        except ValueError:
            weights[media.lower()] = 0.0
    png = weights.get("image/png", weights.get("image/*", 0.0))
    json = max(weights.get("application/json", 0.0), weights.get("application/*", 0.0), weights.get("*/*", 0.0 if weights else 1.0))
    if png <= json or png <= 0:
        return False
    if image_layout(tuple(generation.get("sample_shape") or ())) is None:
        if json > 0:
            return False
        raise NotAcceptable(f"samples of shape {generation.get('sample_shape')} are not images: accept application/json", field="accept")
    return True


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
    low, high = generation.get("value_range") or (0.0, 1.0)
    return grid_png(samples, low=low, high=high)
