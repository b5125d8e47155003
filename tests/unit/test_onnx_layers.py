"""ONNX for every layer type and every example: onnxruntime agrees with PyTorch at batch 1, 7 and 64."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.spec import JobSpec, ModelSpec, has_dynamic_time_axis, resolve
from services.training.builder import build_network
from services.training.export import example_input, export_onnx
from tests.conftest import ROOT

RTOL, ATOL = 1e-3, 1e-5
D = {"type": "Dense", "units": 3}


def _conv2d(**kw: object) -> dict:
    return {"type": "Conv2D", "filters": 4, "kernel_size": 3, **kw}


# (name, input_shape, layers): one small model per layer type, and per notable argument.
CASES = [
    ("Dense", [5], [{"type": "Dense", "units": 4, "activation": "relu"}]),
    ("Dropout", [5], [{"type": "Dropout", "rate": 0.5}, D]),
    *[(f"Activation-{a}", [5], [{"type": "Activation", "activation": a}])
      for a in ("relu", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "sigmoid", "tanh", "softmax", "linear")],
    ("Flatten", [3, 4, 2], [{"type": "Flatten"}, D]),
    ("Reshape", [12], [{"type": "Reshape", "target_shape": [3, -1]}, {"type": "Flatten"}]),
    ("BatchNormalization-flat", [6], [{"type": "BatchNormalization"}]),
    ("BatchNormalization-image", [5, 5, 3], [{"type": "BatchNormalization"}]),
    ("LayerNormalization", [7, 6], [{"type": "LayerNormalization"}]),
    ("Conv1D", [12, 3], [{"type": "Conv1D", "filters": 4, "kernel_size": 3, "activation": "relu"}]),
    ("Conv1D-same-strided", [12, 3], [{"type": "Conv1D", "filters": 4, "kernel_size": 4, "strides": 2, "padding": "same"}]),
    ("Conv2D", [9, 8, 3], [_conv2d(activation="relu")]),
    ("Conv2D-same", [9, 8, 3], [_conv2d(padding="same")]),
    ("Conv2D-same-strided", [9, 8, 3], [_conv2d(kernel_size=[4, 3], strides=2, padding="same")]),
    ("Conv2DTranspose", [5, 4, 3], [{"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, "strides": 2}]),
    ("Conv2DTranspose-same", [5, 4, 3], [{"type": "Conv2DTranspose", "filters": 2, "kernel_size": 4, "strides": 2, "padding": "same"}]),
    ("Conv2DTranspose-same-s1", [5, 4, 3], [{"type": "Conv2DTranspose", "filters": 2, "kernel_size": 2, "padding": "same"}]),
    ("MaxPooling1D", [9, 3], [{"type": "MaxPooling1D"}]),
    ("AveragePooling1D-same", [9, 3], [{"type": "AveragePooling1D", "pool_size": 2, "padding": "same"}]),
    ("MaxPooling2D", [9, 8, 3], [{"type": "MaxPooling2D", "pool_size": 3, "strides": 2}]),
    ("AveragePooling2D-same", [9, 7, 3], [{"type": "AveragePooling2D", "padding": "same"}]),
    ("GlobalAveragePooling1D", [7, 3], [{"type": "GlobalAveragePooling1D"}]),
    ("GlobalMaxPooling1D", [7, 3], [{"type": "GlobalMaxPooling1D"}]),
    ("GlobalAveragePooling2D", [5, 4, 3], [{"type": "GlobalAveragePooling2D"}]),
    ("GlobalMaxPooling2D", [5, 4, 3], [{"type": "GlobalMaxPooling2D"}]),
    ("UpSampling2D", [4, 3, 2], [{"type": "UpSampling2D"}]),
    ("UpSampling2D-bilinear", [4, 3, 2], [{"type": "UpSampling2D", "size": [2, 3], "interpolation": "bilinear"}]),
    ("Embedding", [6], [{"type": "Embedding", "input_dim": 20, "output_dim": 4}, {"type": "Flatten"}]),
    ("SimpleRNN", [7, 3], [{"type": "SimpleRNN", "units": 5}]),
    ("SimpleRNN-relu-sequences", [7, 3], [{"type": "SimpleRNN", "units": 5, "activation": "relu", "return_sequences": True}]),
    ("LSTM", [7, 3], [{"type": "LSTM", "units": 5, "dropout": 0.2}]),
    ("LSTM-sequences", [7, 3], [{"type": "LSTM", "units": 5, "return_sequences": True}]),
    ("GRU", [7, 3], [{"type": "GRU", "units": 5}]),
    ("Bidirectional-concat", [7, 3], [{"type": "Bidirectional", "layer": {"type": "LSTM", "units": 4}}]),
    ("Bidirectional-sum-sequences", [7, 3],
     [{"type": "Bidirectional", "layer": {"type": "GRU", "units": 4, "return_sequences": True}, "merge_mode": "sum"}]),
    ("TransformerEncoder", [6, 8], [{"type": "TransformerEncoder", "num_heads": 2, "ff_dim": 16, "dropout": 0.1}]),
    ("TransformerEncoder-gelu", [6, 8], [{"type": "TransformerEncoder", "num_heads": 4, "ff_dim": 16, "activation": "gelu"}]),
    ("PositionalEmbedding", [6], [{"type": "Embedding", "input_dim": 20, "output_dim": 8}, {"type": "PositionalEmbedding"}]),
    ("PatchEmbedding", [8, 8, 3], [{"type": "PatchEmbedding", "patch_size": 4, "dim": 6}]),
    # Merge layers read the model's input (named "input" in a Sequential spec) and a layer, named in `inputs`.
    *[(kind, [5], [{"type": "Dense", "units": 5, "name": "d"}, {"type": kind, "inputs": ["input", "d"]}])
      for kind in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")],
    ("Add-three", [5], [{"type": "Dense", "units": 5, "name": "d"}, {"type": "Dense", "units": 5, "name": "e", "inputs": ["input"]},
                        {"type": "Add", "inputs": ["input", "d", "e"]}]),
    ("Concatenate", [5], [{"type": "Dense", "units": 3, "name": "d"}, {"type": "Concatenate", "inputs": ["d", "input"]}]),
    ("Concatenate-sequence-axis-1", [4, 3], [{"type": "Conv1D", "filters": 3, "kernel_size": 1, "name": "c"},
                                             {"type": "Concatenate", "axis": 1, "inputs": ["input", "c"]}]),
]  # fmt: skip
# A transfer example's network is its base's layers and its own, known once the base is trained: tests/e2e/test_transfer.py.
# A study's job is its template (examples/study_digits.json; tests/integration/test_studies_api.py submits it).
EXAMPLES = [path for path in sorted((ROOT / "examples").glob("*.json"))
            if "study_name" not in (body := json.loads(path.read_text())) and "base" not in body["model"]]  # fmt: skip


def _inputs(spec: ModelSpec, batch: int, rng: np.random.Generator, length: int | None = None) -> list[np.ndarray]:
    """One array per model input: token ids for those Embedding reads, normal values otherwise."""
    arrays = []
    for item in resolve(spec).inputs:
        shape = list(item.shape)
        if length is not None:
            shape[0] = length
        if item.dtype == "int64":
            arrays.append(rng.integers(0, 20, (batch, *shape)).astype(np.int64))
        else:
            arrays.append(rng.normal(size=(batch, *shape)).astype(np.float32))
    return arrays


def _check(spec: ModelSpec, tmp_path: Path, *, fuse: bool = False) -> None:
    torch.manual_seed(0)
    network = build_network(spec, fuse_output_activation=fuse)
    network.train()
    network(*map(torch.from_numpy, _inputs(spec, 16, np.random.default_rng(1))))  # batch norm's running statistics move
    network.eval()
    path = tmp_path / "m.onnx"
    dynamic = has_dynamic_time_axis(spec)
    input_names, output_names = spec.export_names
    examples = [example_input(i.shape, i.dtype) for i in resolve(spec).inputs]
    export_onnx(network, examples=examples, path=path, input_names=input_names, output_names=output_names, dynamic_time=dynamic)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    lengths = [None, spec.input_shapes[0][0] + 3] if dynamic else [None]
    for batch in (1, 7, 64):
        for length in lengths:
            xs = _inputs(spec, batch, rng, length)
            got = session.run(None, dict(zip(input_names, xs, strict=True)))
            with torch.no_grad():
                expected = network(*map(torch.from_numpy, xs))
            expected = expected if isinstance(expected, tuple) else (expected,)
            for name, onnx_out, torch_out in zip(output_names, got, expected, strict=True):
                np.testing.assert_allclose(
                    onnx_out, torch_out.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"{name}: batch {batch}, length {length}"
                )


@pytest.mark.parametrize(("name", "input_shape", "layers"), CASES, ids=[c[0] for c in CASES])
def test_layer_exports_with_parity(name: str, input_shape: list[int], layers: list[dict], tmp_path: Path) -> None:
    _check(ModelSpec.model_validate({"input_shape": input_shape, "layers": layers}), tmp_path)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_model_exports_with_parity(example: Path, tmp_path: Path) -> None:
    spec = JobSpec.model_validate(json.loads(example.read_text()))
    if spec.kind == "gan":  # both of a GAN's networks; the discriminator's sigmoid, if any, is lifted as a classifier's
        _check(spec.gan.generator, tmp_path)
        _check(spec.gan.discriminator, tmp_path, fuse=True)
        return
    _check(spec.network, tmp_path, fuse=not spec.training.is_regression)


def test_every_layer_type_has_a_parity_case() -> None:
    from typing import get_args

    from services.spec.model import Layer

    union = get_args(Layer)[0]
    types = {t for cls in get_args(union) for t in get_args(cls.model_fields["type"].annotation)}
    covered = {layer["type"] for _, _, layers in CASES for layer in layers}
    assert types <= covered, types - covered


def test_sequence_models_keep_a_dynamic_time_axis(tmp_path: Path) -> None:
    spec = ModelSpec.model_validate({"input_shape": [7, 3], "layers": [{"type": "LSTM", "units": 5}]})
    path = tmp_path / "m.onnx"
    network = build_network(spec, fuse_output_activation=False)
    export_onnx(network, examples=[example_input((7, 3), "float32")], path=path, dynamic_time=True)
    (arg,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    assert isinstance(arg.shape[0], str) and isinstance(arg.shape[1], str) and arg.shape[2] == 3
    fixed = ModelSpec.model_validate({"input_shape": [7, 3], "layers": [{"type": "Flatten"}]})
    assert not has_dynamic_time_axis(fixed)
