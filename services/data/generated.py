"""Datasets shaped like the seeds' examples, made deterministically from a seed (nothing downloaded)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn import datasets as skdatasets

POSITIVE_WORDS = range(1, 11)  # token ids; 0 is padding, 21.. are neutral
NEGATIVE_WORDS = range(11, 21)


def digits28() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits resized to 28x28 (MNIST's shape), values 0-1."""
    x, y = skdatasets.load_digits(return_X_y=True)
    images = ndimage.zoom(x.reshape(-1, 8, 8) / 16.0, (1, 3.5, 3.5), order=1)  # (N, 8, 8) -> (N, 28, 28)
    return np.clip(images, 0.0, 1.0).astype(np.float32), y.astype(np.int64)


def shapes(samples: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Colour images (size, size, 3) of a circle (0), square (1) or triangle (2) on a noisy background."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(samples) % 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((samples, size, size, 3), np.float32)
    for i, label in enumerate(labels):
        cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.12, size * 0.28)
        if label == 0:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        elif label == 1:
            mask = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
        else:  # apex up: inside when below the apex and within the widening sides
            mask = (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
        background = rng.uniform(0.0, 0.4, 3)
        colour = rng.uniform(0.5, 1.0, 3)
        image = background + rng.normal(0.0, 0.05, (size, size, 3))
        image[mask] = colour
        images[i] = np.clip(image, 0.0, 1.0)
    return images, labels.astype(np.int64)


def sine(samples: int, seed: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows (length, 1) of a noisy sine; the target is the value that follows each window."""
    rng = np.random.default_rng(seed)
    steps = np.arange(length + 1, dtype=np.float64)
    phase = rng.uniform(0, 2 * np.pi, (samples, 1))
    frequency = rng.uniform(0.05, 0.15, (samples, 1))
    series = np.sin(frequency * steps + phase) + rng.normal(0.0, 0.05, (samples, length + 1))
    return series[:, :length, None].astype(np.float32), series[:, length:].astype(np.float32)


def tokens(samples: int, seed: int, length: int, vocabulary: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Token-id sentences; label 1 when positive words outnumber negative ones (ties never occur)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(NEGATIVE_WORDS.stop, vocabulary, (samples, length))
    sentiment = rng.random((samples, length)) < 0.3
    ids[sentiment] = rng.integers(POSITIVE_WORDS.start, NEGATIVE_WORDS.stop, int(sentiment.sum()))
    while len(ties := np.flatnonzero(_count(ids, POSITIVE_WORDS) == _count(ids, NEGATIVE_WORDS))):
        ids[ties, rng.integers(0, length, len(ties))] = rng.choice([1, 11], len(ties))  # break ties with one word
    labels = (_count(ids, POSITIVE_WORDS) > _count(ids, NEGATIVE_WORDS)).astype(np.int64)
    return ids.astype(np.int64), labels


def _count(ids: np.ndarray, words: range) -> np.ndarray:
    return ((ids >= words.start) & (ids < words.stop)).sum(axis=1)
