"""PNG images of samples: one sample, or a grid of them."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image


def image_layout(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(H, W, C) for samples shaped as images: (H, W), (H, W, 1|3), or a flat square (64 -> 8x8); None otherwise."""
    if len(shape) == 3 and shape[-1] in (1, 3):
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        side = math.isqrt(shape[0])
        return side, side, 1
    return None


def grid_png(samples: np.ndarray, *, low: float = 0.0, high: float = 1.0, gap: int = 2) -> bytes:
    """The samples (n, *image shape) side by side in a near-square grid, `low`..`high` mapped to black..white."""
    layout = image_layout(tuple(samples.shape[1:]))
    if layout is None:
        raise ValueError(f"samples of shape {list(samples.shape[1:])} are not images")
    height, width, channels = layout
    n = len(samples)
    columns = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    scaled = (samples.astype(np.float64).reshape(n, height, width, channels) - low) / ((high - low) or 1.0)
    pixels = np.clip(np.nan_to_num(scaled, nan=0.0) * 255 + 0.5, 0, 255).astype(np.uint8)
    canvas = np.zeros((rows * (height + gap) - gap, columns * (width + gap) - gap, channels), dtype=np.uint8)
    for index in range(n):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        canvas[top : top + height, left : left + width] = pixels[index]
    return encode_png(canvas)


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit grey (H, W, 1) or RGB (H, W, 3) image as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "PNG")
    return buffer.getvalue()
