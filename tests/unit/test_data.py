"""Built-in datasets: scikit-learn's bundled copies, a fixed test split, reproducible validation splits."""

from __future__ import annotations

import numpy as np
import pytest

from services.data.builtins import load_builtin, validation_split
from services.data.catalogue import BUILTIN_DATASETS, TEST_FRACTION


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_catalogue_matches_the_loaded_data(name: str) -> None:
    info = BUILTIN_DATASETS[name]
    data = load_builtin(name)
    assert len(data.x_train) + len(data.x_test) == info.n_samples
    assert data.x_train.shape[1] == info.n_features and data.x_train.dtype == np.float32
    assert len(data.x_test) == pytest.approx(info.n_samples * TEST_FRACTION, abs=1)
    if info.task == "classification":
        assert sorted(np.unique(data.y_train)) == list(range(info.n_classes))
    else:
        assert data.y_train.shape == (len(data.x_train), info.n_targets)


def test_test_split_is_fixed_and_stratified() -> None:
    first, again = load_builtin("iris"), load_builtin.__wrapped__("iris")
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert first.sha256 == again.sha256
    assert np.bincount(first.y_test).tolist() == [10, 10, 10]


def test_validation_split_depends_only_on_seed() -> None:
    data = load_builtin("wine")
    a = validation_split(data.x_train, data.y_train, fraction=0.25, seed=3, stratify=True)
    b = validation_split(data.x_train, data.y_train, fraction=0.25, seed=3, stratify=True)
    c = validation_split(data.x_train, data.y_train, fraction=0.25, seed=4, stratify=True)
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[2], c[2])
    assert len(a[2]) == pytest.approx(len(data.x_train) * 0.25, abs=1)


def test_no_validation_split_keeps_every_training_row() -> None:
    data = load_builtin("iris")
    x_fit, _, x_val, _ = validation_split(data.x_train, data.y_train, fraction=0.0, seed=0, stratify=True)
    assert len(x_fit) == len(data.x_train) and len(x_val) == 0
