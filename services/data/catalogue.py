"""What each built-in dataset holds, known without loading it (the API validates jobs against this)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from services.errors import InvalidSpec

# Every built-in keeps this fraction as its fixed held-out test split.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    n_samples: int
    feature_shape: tuple[int, ...]
    task: Literal["classification", "regression"]
    class_names: tuple[str, ...] = ()
    n_targets: int = 1
    dtype: str = "float32"  # float32, int64 ... or "text" (raw strings, tokenised by the job)
    vocabulary_size: int | None = None  # token datasets: ids are 0 .. vocabulary_size - 1
    generated: bool = False  # made from a seed; `samples` and `sequence_length` apply
    uploaded: bool = False

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_features(self) -> int:
        return math.prod(self.feature_shape)


BUILTIN_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("digits", "8x8 handwritten digits, values 0-16", 1797, (64,), "classification", tuple("0123456789")),
        DatasetInfo(
            "digits28", "the same digits resized to 28x28 (MNIST's shape), values 0-1", 1797, (28, 28), "classification",
            tuple("0123456789"),
        ),
        DatasetInfo("iris", "iris flower measurements", 150, (4,), "classification", ("setosa", "versicolor", "virginica")),
        DatasetInfo("wine", "chemical analysis of three wine cultivars", 178, (13,), "classification", ("class_0", "class_1", "class_2")),
        DatasetInfo("breast_cancer", "Wisconsin diagnostic breast cancer", 569, (30,), "classification", ("malignant", "benign")),
        DatasetInfo("diabetes", "disease progression one year after baseline", 442, (10,), "regression"),
        DatasetInfo(
            "shapes", "64x64 RGB images of a circle, square or triangle, values 0-1", 1500, (64, 64, 3), "classification",
            ("circle", "square", "triangle"), generated=True,
        ),
        DatasetInfo("sine", "the next value of a noisy sine from the last T values", 2000, (100, 1), "regression", generated=True),
        DatasetInfo(
            "tokens", "token-id sentences: positive when positive words outnumber negative ones", 2000, (20,),
            "classification", ("negative", "positive"), dtype="int64", vocabulary_size=100, generated=True,
        ),
    )
}  # fmt: skip
SEQUENCE_DATASETS = ("sine", "tokens")


def get_dataset_info(name: str) -> DatasetInfo:
    """The catalogue entry for a dataset name, or InvalidSpec listing the known names."""
    try:
        return BUILTIN_DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_DATASETS))
        raise InvalidSpec(f"unknown dataset '{name}': expected a built-in ({known}) or the id of an uploaded dataset",
                          field="data.dataset") from None  # fmt: skip


def resolve_dataset(name: str, *, samples: int | None, sequence_length: int | None) -> DatasetInfo:
    """The dataset as a job asks for it: generated ones take a sample count and a sequence length."""
    info = get_dataset_info(name)
    generated = ", ".join(n for n, i in BUILTIN_DATASETS.items() if i.generated)
    if samples is not None:
        if not info.generated:
            raise InvalidSpec(f"'{name}' is a fixed dataset; samples applies to {generated}", field="data.samples")
        info = dataclasses.replace(info, n_samples=samples)
    if sequence_length is not None:
        if name not in SEQUENCE_DATASETS:
            raise InvalidSpec(f"sequence_length applies to {', '.join(SEQUENCE_DATASETS)}", field="data.sequence_length")
        info = dataclasses.replace(info, feature_shape=(sequence_length, *info.feature_shape[1:]))
    return info


def upload_info(record_id: str, *, name: str, n_samples: int, feature_shape: tuple[int, ...], dtype: str,
                target: dict[str, object]) -> DatasetInfo:  # fmt: skip
    """The catalogue view of an uploaded dataset."""
    if target["kind"] == "classification":
        names = tuple(str(n) for n in target["class_names"])  # type: ignore[attr-defined]
        return DatasetInfo(record_id, name, n_samples, feature_shape, "classification", names, dtype=dtype, uploaded=True)
    n_targets = int(target["n_targets"])  # type: ignore[call-overload]
    return DatasetInfo(record_id, name, n_samples, feature_shape, "regression", n_targets=n_targets, dtype=dtype, uploaded=True)
