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
    assert data.x_train.shape[1:] == info.feature_shape and data.x_train.dtype == np.dtype(info.dtype)
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


@pytest.mark.parametrize("name", ["shapes", "sine", "tokens"])
def test_generated_datasets_depend_only_on_their_seed(name: str) -> None:
    a = load_builtin(name, samples=60, seed=1)
    b = load_builtin.__wrapped__(name, samples=60, seed=1)
    c = load_builtin(name, samples=60, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.sha256 == b.sha256 != c.sha256
    assert len(a.x_train) + len(a.x_test) == 60


def test_digits28_is_the_digits_at_mnist_size() -> None:
    data = load_builtin("digits28")
    assert data.x_train.shape[1:] == (28, 28) and 0 <= data.x_train.min() and data.x_train.max() <= 1
    assert len(data.x_train) == len(load_builtin("digits").x_train)


def test_shapes_are_balanced_colour_images() -> None:
    data = load_builtin("shapes", samples=90)
    assert data.x_train.shape[1:] == (64, 64, 3)
    assert np.bincount(np.concatenate([data.y_train, data.y_test])).tolist() == [30, 30, 30]
    circle, square = (data.x_train[data.y_train == k][0] for k in (0, 1))
    assert not np.array_equal(circle, square)


def test_tokens_label_follows_the_sentiment_rule() -> None:
    from services.data.generated import NEGATIVE_WORDS, POSITIVE_WORDS

    data = load_builtin("tokens", samples=200, sequence_length=12)
    x, y = data.x_train, data.y_train
    assert x.shape[1:] == (12,) and x.dtype == np.int64 and x.min() >= 1 and x.max() < 100
    positive = ((x >= POSITIVE_WORDS.start) & (x < POSITIVE_WORDS.stop)).sum(1)
    negative = ((x >= NEGATIVE_WORDS.start) & (x < NEGATIVE_WORDS.stop)).sum(1)
    np.testing.assert_array_equal(y, (positive > negative).astype(np.int64))
    assert (positive != negative).all()


def test_sine_target_continues_the_window() -> None:
    data = load_builtin("sine", samples=50, sequence_length=30)
    assert data.x_train.shape[1:] == (30, 1) and data.y_train.shape[1:] == (1,)
    # A smooth sine: the next value is close to the last one plus the last step.
    extrapolated = 2 * data.x_train[:, -1, 0] - data.x_train[:, -2, 0]
    assert np.abs(extrapolated - data.y_train[:, 0]).mean() < 0.2
