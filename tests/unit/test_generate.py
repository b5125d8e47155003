"""generate's pure parts: z from a seed, classes by index or name, the answer's size, and what Accept asks for."""

from __future__ import annotations

import numpy as np
import pytest

from services.errors import InvalidInput, NotAcceptable
from services.usecases.generate import MAX_VALUES, check_size, latent_feeds, wants_png

IMAGES = {"latent_dim": 4, "classes": 3, "labels": ["a", "b", "c"], "sample_shape": [28, 28, 1], "value_range": [0.0, 1.0]}
VECTORS = {"latent_dim": 4, "classes": 0, "labels": None, "sample_shape": [10], "value_range": [0.0, 1.0]}


def test_the_same_seed_draws_the_same_z_and_classes_come_by_index_name_or_in_turn() -> None:
    feeds, seed, labels = latent_feeds(IMAGES, 4, 5, None)
    again, _, _ = latent_feeds(IMAGES, 4, 5, ["a", 1, "c", 0])
    np.testing.assert_array_equal(feeds["z"], again["z"])
    assert seed == 5 and labels == [0, 1, 2, 0] and again["label"].ravel().tolist() == [0, 1, 2, 0]
    assert feeds["z"].dtype == np.float32 and feeds["label"].shape == (4, 1) and feeds["label"].dtype == np.int64
    fresh = [latent_feeds(VECTORS, 2, None, None) for _ in range(2)]
    assert fresh[0][1] != fresh[1][1] and "label" not in fresh[0][0]  # no seed: a fresh one, returned


@pytest.mark.parametrize(("generation", "labels", "field"),
                         [(VECTORS, [0, 0], "labels"), (IMAGES, [0], "labels"), (IMAGES, [0, 3], "labels[1]"),
                          (IMAGES, [0, "z"], "labels[1]"), (IMAGES, [True, 0], "labels[0]")])  # fmt: skip
def test_bad_labels_name_the_field(generation: dict, labels: list, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        latent_feeds(generation, 2, 0, labels)
    assert caught.value.field == field


def test_an_answer_too_large_is_refused_naming_the_most_n() -> None:
    check_size(IMAGES, MAX_VALUES // 784)
    with pytest.raises(InvalidInput, match=f"at most {MAX_VALUES // 784}") as caught:
        check_size(IMAGES, MAX_VALUES // 784 + 1)
    assert caught.value.field == "n"


@pytest.mark.parametrize(("accept", "png"), [("", False), ("application/json", False), ("image/png", True), ("*/*", False),
                                             ("image/png;q=0, application/json", False), ("image/*, application/json;q=0.5", True),
                                             ("application/json;q=0.2, image/png;q=0.9", True)])  # fmt: skip
def test_accept_is_read_with_its_weights(accept: str, png: bool) -> None:
    assert wants_png(accept, IMAGES) is png


def test_png_of_samples_that_are_not_images_is_a_406_unless_json_is_accepted_too() -> None:
    assert wants_png("image/png, application/json;q=0.1", VECTORS | {"sample_shape": [10]}) is False
    with pytest.raises(NotAcceptable):
        wants_png("image/png", VECTORS | {"sample_shape": [10]})
