"""Inputs checked against a version's signature, and the onnxruntime session cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper

from services.errors import InvalidInput
from services.serving.sessions import OnnxSessionCache
from services.serving.signature import TensorSpec, check_input
from services.usecases.predict import as_input_array, non_number, only_numbers

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


BODIES = [b'{"inputs": [[1, 2.5, -3e-2]]}', b'{"inputs": [[[1],[2]]]}', b'{"inputs": [[true, 1]]}', b'{"inputs": [[1, false]]}',
          b'{"inputs": [[null]]}', b'{"inputs": [["4", 1]]}', b'{"inputs": [[{"a": 1}]]}', b'{"inputs": [[1]], "x": "y"}',
          b'{"inputs": [[1e39, 2]]}', b'{"inputs":[[1,2]]}', b'{"in\\"puts": 1, "inputs": [[1]]}', b'{"inputs": [[1.5]]}']  # fmt: skip


@pytest.mark.parametrize("raw", BODIES)
def test_the_byte_scan_says_numbers_only_just_when_the_walk_finds_no_other_value(raw: bytes) -> None:
    body = orjson.loads(raw)
    assert only_numbers(raw) is (len(body) == 1 and non_number(body["inputs"]) is None)


@pytest.mark.parametrize("raw", [b'{"inputs": [[true, 1]]}', b'{"inputs": [[1, null]]}', b'{"inputs": [["4"]]}'])
def test_a_body_the_scan_cannot_clear_is_still_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInput, match="expected float32 numbers"):
        as_input_array(orjson.loads(raw)["inputs"], numbers_only=only_numbers(raw))


def test_fractions_for_an_integer_input_are_refused_on_a_numbers_only_body() -> None:
    raw = b'{"inputs": [[1.5, 2]]}'
    assert only_numbers(raw)
    with pytest.raises(InvalidInput, match="got fractions"):
        as_input_array(orjson.loads(raw)["inputs"], dtype="int64", numbers_only=True)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_non_finite_values_are_refused_in_every_float_width(dtype: str) -> None:
    top = float(np.finfo(dtype).max)
    assert as_input_array([[top, top, -top]], dtype=dtype).shape == (1, 3)  # finite, however large: never a false refusal
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(InvalidInput, match="finite"):
            as_input_array([[1.0, bad]], dtype=dtype, numbers_only=True)


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
