"""What each built-in dataset holds, known without loading it (the API validates jobs against this)."""

from __future__ import annotations

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
    n_features: int
    task: Literal["classification", "regression"]
    class_names: tuple[str, ...] = ()
    n_targets: int = 1

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


BUILTIN_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("digits", "8x8 handwritten digits, values 0-16", 1797, 64, "classification", tuple("0123456789")),
        DatasetInfo("iris", "iris flower measurements", 150, 4, "classification", ("setosa", "versicolor", "virginica")),
        DatasetInfo(
            "wine", "chemical analysis of three wine cultivars", 178, 13, "classification", ("class_0", "class_1", "class_2")
        ),
        DatasetInfo("breast_cancer", "Wisconsin diagnostic breast cancer", 569, 30, "classification", ("malignant", "benign")),
        DatasetInfo("diabetes", "disease progression one year after baseline", 442, 10, "regression"),
    )
}


def get_dataset_info(name: str) -> DatasetInfo:
    """The catalogue entry for a dataset name, or InvalidSpec listing the known names."""
    try:
        return BUILTIN_DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_DATASETS))
        raise InvalidSpec(f"unknown dataset '{name}': expected one of {known}", field="data.dataset") from None
