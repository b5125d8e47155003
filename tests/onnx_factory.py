"""Small ONNX models the tests build with onnx's helpers: no torch, so they stand for bring-your-own files."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear_softmax(weights: np.ndarray, *, name: str = "classifier") -> bytes:
    """(N, F) float32 -> softmax(x @ W) (N, K): a bring-your-own classifier."""
    features, classes = weights.shape
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])
    w = numpy_helper.from_array(weights.astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["features", "W"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, name, [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def scale(factor: float, width: int) -> bytes:
    """(N, width) -> factor * x."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [factor])
    graph = helper.make_graph([helper.make_node("Mul", ["input", "k"], ["output"])], "scale", [x], [y], [k])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def with_external_data(model_bytes: bytes) -> bytes:
    """The same model, claiming its weights live in a file beside it."""
    model = onnx.load_from_string(model_bytes)
    tensor = model.graph.initializer[0]
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    tensor.ClearField("raw_data")
    return model.SerializeToString()


def malformed() -> bytes:
    """A graph whose node reads a tensor nothing produces."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph([helper.make_node("Add", ["input", "nowhere"], ["output"])], "bad", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def add_two(width: int) -> bytes:
    """Two inputs, (N, width) `a` and `b` -> a + b: a model v1 must address by input name."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", width])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", width])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], "add_two", [a, b], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def unknown_op(domain: str = "kiln.test") -> bytes:
    """A valid graph whose one node is `NoSuchOp` of `domain`: the checker passes a custom domain, onnxruntime cannot run it."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["input"], ["output"], domain=domain)], "unknown", [x], [y])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def split_sum_and_difference(width: int) -> bytes:
    """Two inputs and two outputs: (N, width) `a`, `b` -> `sum` a + b and `difference` a - b."""
    a, b = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width]) for n in ("a", "b"))
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width]) for n in ("sum", "difference")]
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Sub", ["a", "b"], ["difference"])]
    graph = helper.make_graph(nodes, "sum_and_difference", [a, b], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def reshape_to(target: list[int], width: int) -> bytes:
    """(N, width) -> Reshape to the fixed `target`: loads, but runs only when N * width fits it."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, target)
    shape = helper.make_tensor("shape", TensorProto.INT64, [len(target)], target)
    graph = helper.make_graph([helper.make_node("Reshape", ["input", "shape"], ["output"])], "reshape", [x], [y], [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def sequence_sum() -> bytes:
    """(N, T) float32 -> (N, 1), the sum over a sequence of any length: each length is its own batch shape."""
    x = helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "time"])
    y = helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 1])
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph([helper.make_node("ReduceSum", ["tokens", "axes"], ["total"], keepdims=1)], "sum", [x], [y], [axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def slow_tower(width: int = 256, depth: int = 200) -> bytes:
    """(N, width) -> tanh(... tanh(x @ W) ... @ W), `depth` times over one shared weight: milliseconds a row, in a small file."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, width**-0.5, (width, width)).astype(np.float32), "W")
    nodes, last = [], "input"
    for i in range(depth):
        nodes += [helper.make_node("MatMul", [last, "W"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        last = f"t{i}"
    nodes.append(helper.make_node("Identity", [last], ["output"]))
    graph = helper.make_graph(nodes, "slow_tower", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
