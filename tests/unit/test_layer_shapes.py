"""Shape inference for every layer, and the messages that tell a user how to fix a spec."""

from __future__ import annotations

import pytest

from services.data.catalogue import resolve_dataset
from services.errors import InvalidSpec
from services.spec import JobSpec, ModelSpec, check_job_against_dataset, infer_shapes
from tests.factories import job_body


def shapes(input_shape: list[int], *layers: dict) -> list[tuple[int, ...]]:
    return infer_shapes(ModelSpec.model_validate({"input_shape": input_shape, "layers": list(layers)}))


@pytest.mark.parametrize(
    ("input_shape", "layer", "expected"),
    [
        ([28, 28, 1], {"type": "Conv2D", "filters": 32, "kernel_size": 3}, (26, 26, 32)),
        ([28, 28, 1], {"type": "Conv2D", "filters": 8, "kernel_size": [5, 3], "strides": 2, "padding": "same"}, (14, 14, 8)),
        ([27, 27, 1], {"type": "Conv2D", "filters": 8, "kernel_size": 3, "strides": 2}, (13, 13, 8)),
        ([7, 7, 4], {"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, "strides": 2}, (15, 15, 2)),
        ([7, 7, 4], {"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, "strides": 2, "padding": "same"}, (14, 14, 2)),
        ([26, 26, 32], {"type": "MaxPooling2D"}, (13, 13, 32)),
        ([27, 27, 32], {"type": "MaxPooling2D", "padding": "same"}, (14, 14, 32)),
        ([10, 3], {"type": "Conv1D", "filters": 6, "kernel_size": 3}, (8, 6)),
        ([10, 3], {"type": "AveragePooling1D", "pool_size": 3}, (3, 3)),
        ([10, 3], {"type": "GlobalMaxPooling1D"}, (3,)),
        ([5, 5, 3], {"type": "GlobalAveragePooling2D"}, (3,)),
        ([5, 4, 3], {"type": "UpSampling2D", "size": [2, 3]}, (10, 12, 3)),
        ([12], {"type": "Reshape", "target_shape": [-1, 3]}, (4, 3)),
        ([20], {"type": "Embedding", "input_dim": 100, "output_dim": 16}, (20, 16)),
        ([20, 16], {"type": "LSTM", "units": 8}, (8,)),
        ([20, 16], {"type": "GRU", "units": 8, "return_sequences": True}, (20, 8)),
        ([20, 16], {"type": "Bidirectional", "layer": {"type": "SimpleRNN", "units": 8}}, (16,)),
        (
            [20, 16],
            {"type": "Bidirectional", "layer": {"type": "LSTM", "units": 8, "return_sequences": True}, "merge_mode": "sum"},
            (20, 8),
        ),
        ([20, 16], {"type": "TransformerEncoder", "num_heads": 4, "ff_dim": 32}, (20, 16)),
        ([20, 16], {"type": "PositionalEmbedding"}, (20, 16)),
        ([28, 28, 1], {"type": "PatchEmbedding", "patch_size": 7, "dim": 32}, (16, 32)),
        ([4, 3], {"type": "BatchNormalization"}, (4, 3)),
        ([4, 3], {"type": "LayerNormalization"}, (4, 3)),
    ],
)
def test_output_shape(input_shape: list[int], layer: dict, expected: tuple[int, ...]) -> None:
    assert shapes(input_shape, layer) == [expected]


@pytest.mark.parametrize(
    ("input_shape", "layers", "message"),
    [
        ([28, 28, 1], [{"type": "Conv2D", "filters": 32, "kernel_size": 3}, {"type": "MaxPooling2D"},
                       {"type": "Conv2D", "filters": 32, "kernel_size": 3}, {"type": "Dense", "units": 10}],
         "layer 3 'dense' (Dense) needs a flat input, got (None, 11, 11, 32): add Flatten before it"),
        ([784], [{"type": "Conv2D", "filters": 8, "kernel_size": 3}],
         "layer 0 'conv2d' (Conv2D) needs an image input (H, W, C), got (None, 784): add Reshape to (H, W, C) before it"),
        ([100], [{"type": "LSTM", "units": 8}], "layer 0 'lstm' (LSTM) needs a sequence input (T, F), got (None, 100)"),
        ([4, 4, 1], [{"type": "Conv2D", "filters": 8, "kernel_size": 5}],
         "layer 0 'conv2d' (Conv2D) window 5 is larger than the input length 4"),
        ([20, 30], [{"type": "TransformerEncoder", "num_heads": 4, "ff_dim": 8}], "divisible by num_heads=4"),
        ([30, 30, 1], [{"type": "PatchEmbedding", "patch_size": 7, "dim": 8}], "patch_size 7 does not divide the image"),
        ([12], [{"type": "Reshape", "target_shape": [5, -1]}], "cannot reshape (None, 12) (12 values) to (5, -1)"),
        ([9, 9, 1], [{"type": "MaxPooling2D", "pool_size": 3, "strides": 2, "padding": "same"}], "padding 'same' needs strides equal"),
        ([10], [{"type": "Dense", "units": 4}, {"type": "Embedding", "input_dim": 10, "output_dim": 4}],
         "layer 1 'embedding' (Embedding) must read a model input"),
    ],
)  # fmt: skip
def test_bad_layer_names_index_type_and_fix(input_shape: list[int], layers: list[dict], message: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        shapes(input_shape, *layers)
    assert message in err.value.message
    assert err.value.field is not None and err.value.field.startswith("model.layers[")


def _check(**overrides: object) -> None:
    spec = JobSpec.model_validate(job_body(**overrides))
    data = spec.data
    check_job_against_dataset(spec, resolve_dataset(data.dataset, samples=data.samples, sequence_length=data.sequence_length))


def test_token_models_must_start_with_an_embedding_wide_enough() -> None:
    layers = [{"type": "Embedding", "input_dim": 50, "output_dim": 8}, {"type": "GlobalAveragePooling1D"}, {"type": "Dense", "units": 2}]
    with pytest.raises(InvalidSpec, match="set input_dim=100"):
        _check(model={"input_shape": [20], "layers": layers}, data={"dataset": "tokens"})
    with pytest.raises(InvalidSpec, match="holds token ids: start the model with Embedding"):
        _check(model={"input_shape": [20], "layers": [{"type": "Dense", "units": 2}]}, data={"dataset": "tokens"})
    with pytest.raises(InvalidSpec, match="Embedding needs integer token ids"):
        _check(model={"input_shape": [64], "layers": [{"type": "Embedding", "input_dim": 17, "output_dim": 2}, {"type": "Flatten"},
                                                      {"type": "Dense", "units": 10}]})  # fmt: skip


def test_autoencoder_must_reproduce_its_input() -> None:
    _check(model={"input_shape": [64], "layers": [{"type": "Dense", "units": 8}, {"type": "Dense", "units": 64}]},
           data={"targets": "inputs"}, training={"loss": "mse"})  # fmt: skip
    with pytest.raises(InvalidSpec, match=r"outputs \(None, 10\) but must reproduce its input \(None, 64\)"):
        _check(data={"targets": "inputs"}, training={"loss": "mse"})
    with pytest.raises(InvalidSpec, match="needs a regression loss"):
        _check(model={"input_shape": [64], "layers": [{"type": "Dense", "units": 64}]}, data={"targets": "inputs"})


def test_monitors_must_exist() -> None:
    with pytest.raises(InvalidSpec, match="cannot monitor 'val_loss'.*set data.validation_split") as err:
        _check(data={"validation_split": 0.0}, training={"early_stopping": {"monitor": "val_loss"}})
    assert err.value.field == "training.early_stopping.monitor"
    with pytest.raises(InvalidSpec, match="cannot monitor 'val_f1'"):
        _check(training={"lr_schedule": {"name": "reduce_on_plateau", "monitor": "val_f1"}})
    _check(training={"metrics": ["f1"], "lr_schedule": {"name": "reduce_on_plateau", "monitor": "val_f1"}})


def test_generated_dataset_options() -> None:
    layers = [{"type": "SimpleRNN", "units": 4}, {"type": "Dense", "units": 1}]
    _check(model={"input_shape": [30, 1], "layers": layers}, data={"dataset": "sine", "sequence_length": 30, "samples": 100},
           training={"loss": "mse"})  # fmt: skip
    with pytest.raises(InvalidSpec, match="'digits' is a fixed dataset; samples applies to shapes, sine, tokens"):
        _check(data={"samples": 100})


def test_metrics_must_suit_the_task() -> None:
    with pytest.raises(InvalidSpec, match="metric 'mae' does not apply to loss 'sparse_categorical_crossentropy'"):
        _check(training={"metrics": ["accuracy", "mae"]})
