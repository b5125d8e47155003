"""Turning what a person has (an array, a list, some text, a .npy, a .csv, a PNG) into rows a version takes."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.results import Version

IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def rows_of(x: Any, version: Version) -> list[Any]:
    """JSON rows for `version` from `x`: a numpy array or list (rows), a str naming a file, or a str of text (one row)."""
    if isinstance(x, np.ndarray):
        return _rows(x, version)
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, (str, Path)):
        path = Path(x)
        if path.suffix.lower() in (".npy", ".csv", *IMAGES) and path.is_file():
            return _file_rows(path, version)
        if isinstance(x, str):
            return [x]  # text, for a text model
    raise KilnError(f"cannot send {type(x).__name__} as input: give an array, a list, text or a .npy, .csv or image path",
                    code="invalid_input")  # fmt: skip


def _rows(array: np.ndarray, version: Version) -> list[Any]:
    shape = version.input_shape
    if list(array.shape) == shape:  # one sample: make it a batch of one
        array = array[None]
    return array.tolist()


def _file_rows(path: Path, version: Version) -> list[Any]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _rows(np.load(path, allow_pickle=False), version)
    if suffix == ".csv":
        return _csv_rows(path)
    return [image_input(path, version).tolist()]


def _csv_rows(path: Path) -> list[Any]:
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    try:
        return [[float(v) for v in row] for row in rows]
    except ValueError as err:
        raise KilnError(f"{path}: every value must be a number ({err})", code="invalid_input") from None


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def image_input(path: Path, version: Version) -> np.ndarray:
    """An image as the version's input: resized to its height and width, grey or RGB by its channels, scaled to the range
    its training images had (stored with the version), and flattened for an MLP on square images."""
    try:
        from PIL import Image
    except ImportError as err:
        raise KilnError("images need pillow: pip install 'kiln-client[plot]'", code="missing_extra") from err
    value_range = version.input_range
    if value_range is None:
        raise KilnError(f"version {version.version} of '{version.model}' was not trained on images (it records no pixel range): "
                        "give an array or a .npy instead", code="invalid_input")  # fmt: skip
    shape = version.input_shape
    height, width, channels, flat = _image_shape(shape)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR))
    low, high = value_range
    scaled = pixels.astype(np.float32) / 255.0 * (high - low) + low
    return scaled.reshape(-1) if flat else scaled.reshape(shape)


def _image_shape(shape: list[int]) -> tuple[int, int, int, bool]:
    """(height, width, channels, flattened) for an input shape: (H, W, C), (H, W), or (N,) of a square grey or RGB image."""
    if len(shape) == 3 and shape[2] in (1, 3):
        return shape[0], shape[1], shape[2], False
    if len(shape) == 2:
        return shape[0], shape[1], 1, False
    if len(shape) == 1:
        for channels in (1, 3):
            side = math.isqrt(shape[0] // channels)
            if side * side * channels == shape[0]:
                return side, side, channels, True
    raise KilnError(f"an input of shape {shape} is not an image: give an array or a .npy instead", code="invalid_input")
