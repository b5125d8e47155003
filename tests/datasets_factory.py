"""Dataset files the tests make: CSV with string labels, sentiment text, image ZIPs, NPZ arrays."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image
from sklearn.datasets import load_iris

POSITIVE = ["great", "wonderful", "loved", "excellent", "brilliant", "superb"]
NEGATIVE = ["awful", "boring", "hated", "terrible", "dull", "worst"]
FILLER = ["the", "movie", "film", "plot", "actors", "was", "really", "and", "a", "story", "this", "it"]


def iris_csv() -> str:
    """scikit-learn's iris with the species as names, the way a user's CSV looks."""
    iris = load_iris()
    header = ",".join(name.replace(" (cm)", "").replace(" ", "_") for name in iris.feature_names) + ",species"
    rows = [",".join(f"{v:.1f}" for v in x) + f",{iris.target_names[y]}" for x, y in zip(iris.data, iris.target, strict=True)]
    return "\n".join([header, *rows]) + "\n"


def sentiment_csv(rows: int = 400, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = ["text,label"]
    for i in range(rows):
        label = "positive" if i % 2 else "negative"
        words = list(rng.choice(FILLER, 8)) + list(rng.choice(POSITIVE if label == "positive" else NEGATIVE, 2))
        rng.shuffle(words)
        lines.append(f'"{" ".join(words).capitalize()}!",{label}')
    return "\n".join(lines) + "\n"


def image_zip(per_class: int = 12, size: int = 20, seed: int = 0, root: str = "pets") -> bytes:
    """Bright squares ('day') and dark ones ('night'), in one folder per class."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for cls, level in (("day", 200), ("night", 40)):
            for i in range(per_class):
                pixels = np.clip(rng.normal(level, 20, (size, size + 4, 3)), 0, 255).astype(np.uint8)
                image = io.BytesIO()
                Image.fromarray(pixels).save(image, "PNG" if i % 2 else "JPEG")
                archive.writestr(f"{root}/{cls}/{i}.{'png' if i % 2 else 'jpg'}", image.getvalue())
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()
