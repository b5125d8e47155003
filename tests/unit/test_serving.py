"""Inputs checked against a version's signature, and the onnxruntime session cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from services.errors import InvalidInput
from services.serving.sessions import OnnxSessionCache
from services.serving.signature import TensorSpec, check_input
from services.usecases.predict import as_input_array

SPEC = TensorSpec("input", "float32", (-1, 64))


def test_wrong_width_names_expected_and_given_shape() -> None:
    with pytest.raises(InvalidInput, match=r"^expected \(N, 64\) float32, got \(N, 63\) float32$"):
        check_input(SPEC, np.zeros((2, 63), np.float32))


def test_any_batch_size_fits_the_dynamic_axis() -> None:
    for rows in (1, 7, 300):
        check_input(SPEC, np.zeros((rows, 64), np.float32))


def test_wrong_rank_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"got \(N, 8, 8\) float32"):
        check_input(SPEC, np.zeros((1, 8, 8), np.float32))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([[1, 2], [3]], "rectangular array of numbers"),
        ([["a", "b"]], "rectangular array of numbers"),
        ([], "at least one row"),
        ([[1.0, float("nan")]], "finite"),
        ([[float("inf")]], "finite"),
    ],
)
def test_bad_input_values_are_refused(values: list, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        as_input_array(values)


def _identity_model(path: Path, width: int) -> None:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_session_cache_is_lru_bounded(tmp_path: Path) -> None:
    for name, width in (("a", 2), ("b", 3), ("c", 4)):
        _identity_model(tmp_path / name, width)
    cache = OnnxSessionCache(capacity=2, path_for=lambda key: tmp_path / key)
    a = cache.get("a")
    assert a.signature.inputs == (TensorSpec("input", "float32", (-1, 2)),)
    assert cache.get("a") is a
    cache.get("b")
    cache.get("a")  # a is now the most recently used
    cache.get("c")  # evicts b
    assert len(cache) == 2 and cache.get("a") is a
    out = cache.get("c").run({"input": np.ones((3, 4), np.float32)})
    np.testing.assert_array_equal(out[0], np.ones((3, 4)))
