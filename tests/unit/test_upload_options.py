"""Upload options are checked explicitly (not by assert, which `python -O` strips)."""

from __future__ import annotations

import pytest

from api.routers.datasets import upload_options
from services.errors import InvalidDataset


@pytest.mark.parametrize("size", ["big", "", "2,64", "64,2048", "3x3", "-64,64"])
def test_an_image_size_outside_4_to_1024_is_refused_naming_the_field(size: str) -> None:
    with pytest.raises(InvalidDataset, match="image_size") as err:
        upload_options({"format": "image_zip", "image_size": size}, "d.zip")
    assert err.value.field == "image_size"


def test_an_image_size_within_bounds_is_read_as_height_and_width() -> None:
    assert upload_options({"format": "image_zip", "image_size": "32x48"}, "d.zip").image_size == (32, 48)
