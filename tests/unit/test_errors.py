"""Error locations are written the way users write the spec."""

from __future__ import annotations

import pytest

from api.errors import format_loc


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("body", "model", "layers", 1, "Dense", "units"), "model.layers[1].units"),
        (("body", "model", "layers", 3), "model.layers[3]"),
        (("body", "training", "loss"), "training.loss"),
        (("query", "limit"), "limit"),
        (("body",), "body"),
    ],
    ids=["layer-field-drops-the-type-tag", "layer-index", "nested-field", "query-parameter", "whole-body"],
)
def test_an_error_location_is_written_as_a_spec_path(loc: tuple, expected: str) -> None:
    assert format_loc(loc) == expected
