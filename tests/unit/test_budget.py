"""Budgets: the spec's parameter count equals torch's for every layer, and a spec over a limit is refused naming the layer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from services.errors import InvalidSpec
from services.spec import Budget, JobSpec, ModelSpec, check_budget, infer_layers
from services.spec.budget import footprints, optimizer_state_copies
from services.training.builder import build_network
from services.training.optim import make_optimizer
from tests.unit.test_builder import valid_models

RNN = {"type": "LSTM", "units": 5}
LAYERS = {
    "Dense": ([6], [{"type": "Dense", "units": 4}]),
    "Dense without bias": ([6], [{"type": "Dense", "units": 4, "use_bias": False}]),
    "Conv1D": ([9, 3], [{"type": "Conv1D", "filters": 4, "kernel_size": 3}]),
    "Conv1D same, no bias": ([9, 3], [{"type": "Conv1D", "filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False}]),
    "Conv2D": ([8, 8, 3], [{"type": "Conv2D", "filters": 5, "kernel_size": [3, 2], "strides": 2}]),
    "Conv2DTranspose": ([4, 4, 3], [{"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, "strides": 2, "padding": "same"}]),
    "Embedding": ([7], [{"type": "Embedding", "input_dim": 50, "output_dim": 6}]),
    "SimpleRNN": ([7, 3], [{"type": "SimpleRNN", "units": 5, "return_sequences": True}]),
    "LSTM": ([7, 3], [RNN]),
    "GRU": ([7, 3], [{"type": "GRU", "units": 5}]),
    "Bidirectional LSTM": ([7, 3], [{"type": "Bidirectional", "layer": RNN}]),
    "Bidirectional GRU, sum": ([7, 3], [{"type": "Bidirectional", "layer": {"type": "GRU", "units": 4}, "merge_mode": "sum"}]),
    "BatchNormalization on images": ([4, 4, 3], [{"type": "BatchNormalization"}]),
    "BatchNormalization on vectors": ([6], [{"type": "BatchNormalization"}]),
    "LayerNormalization": ([7, 3], [{"type": "LayerNormalization"}]),
    "TransformerEncoder": ([7, 8], [{"type": "TransformerEncoder", "num_heads": 2, "ff_dim": 16}]),
    "PositionalEmbedding": ([10], [{"type": "Embedding", "input_dim": 20, "output_dim": 4}, {"type": "PositionalEmbedding"}]),
    "PatchEmbedding": ([8, 8, 3], [{"type": "PatchEmbedding", "patch_size": 4, "dim": 6}]),
    "pooling and reshapes weigh nothing": (
        [8, 8, 2],
        [
            {"type": "MaxPooling2D"},
            {"type": "UpSampling2D"},
            {"type": "Flatten"},
            {"type": "Dropout", "rate": 0.1},
            {"type": "Reshape", "target_shape": [16, 8]},
            {"type": "GlobalAveragePooling1D"},
            {"type": "Activation", "activation": "relu"},
        ],
    ),
}


def torch_count(model: ModelSpec) -> int:
    return sum(p.numel() for p in build_network(model, fuse_output_activation=False).parameters())


@pytest.mark.parametrize("case", list(LAYERS))
def test_parameter_count_equals_torch_for_each_layer_type(case: str) -> None:
    input_shape, layers = LAYERS[case]
    model = ModelSpec.model_validate({"input_shape": input_shape, "layers": layers})
    counted = sum(layer.parameters for layer in infer_layers(model))
    assert counted == torch_count(model)
    assert (counted == 0) == (case == "pooling and reshapes weigh nothing")


@settings(max_examples=100, deadline=None)
@given(model=valid_models())
def test_parameter_count_equals_torch_for_any_valid_model(model: ModelSpec) -> None:
    network = build_network(model, fuse_output_activation=False)
    for index, (block, inferred) in enumerate(zip(network.body, infer_layers(model), strict=True)):
        assert inferred.parameters == sum(p.numel() for p in block.parameters()), f"layer {index} ({model.layers[index].type})"


def job(layers: list[dict], *, input_shape: list[int] | None = None, **training: object) -> JobSpec:
    return JobSpec.model_validate({
        "model_name": "budget", "model": {"input_shape": input_shape or [64], "layers": layers},
        "data": {"dataset": "digits"}, "training": {"loss": "sparse_categorical_crossentropy", **training},
    })  # fmt: skip


BIG = [{"type": "Dense", "units": 65536}, {"type": "Dense", "units": 65536}]
ROOMY = Budget(max_parameters=100_000_000, max_training_memory_mb=10**9)


def test_a_layer_over_the_parameter_limit_is_named_with_its_count() -> None:
    with pytest.raises(InvalidSpec) as refused:
        check_budget(job(BIG), ROOMY)
    assert refused.value.message == "layer 1 'dense_1' (Dense): 4,295,032,832 parameters, over KILN_MAX_PARAMETERS=100,000,000"
    assert refused.value.field == "model.layers[1]"


def test_small_layers_that_add_up_over_the_limit_name_the_one_that_crosses_it() -> None:
    layers = [{"type": "Dense", "units": 100}] * 3  # 6,500 then 10,100 then 10,100 parameters
    with pytest.raises(
        InvalidSpec, match=r"^layer 2 'dense_2' \(Dense\): 10,100 parameters bring the model to 26,700, over KILN_MAX_PARAMETERS=20,000$"
    ):
        check_budget(job(layers), Budget(max_parameters=20_000, max_training_memory_mb=10**9))
    assert check_budget(job(layers), Budget(max_parameters=26_700, max_training_memory_mb=10**9)).parameters == 26_700


def test_memory_counts_weights_gradients_optimizer_state_and_a_batch_of_activations() -> None:
    layers = [{"type": "Dense", "units": 1000}, {"type": "Dense", "units": 10}]
    params = 64 * 1000 + 1000 + 1000 * 10 + 10
    activations = 64 + 1000 + 10  # the input and each layer's output, per sample
    for optimizer, copies in [("adam", 2), ("adamw", 2), ({"name": "sgd", "momentum": 0.9}, 1), ("sgd", 0), ("adagrad", 1)]:
        spec = job(layers, optimizer=optimizer, batch_size=128)
        assert footprints(spec)[-1].memory_bytes == 4 * (params * (2 + copies) + activations * 128)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", {"name": "sgd", "momentum": 0.9}, "rmsprop",
                                       {"name": "rmsprop", "momentum": 0.5}, "adagrad"])  # fmt: skip
def test_optimizer_state_copies_match_what_torch_keeps(optimizer: object) -> None:
    spec = job([{"type": "Dense", "units": 3}], optimizer=optimizer)
    network = build_network(spec.model, fuse_output_activation=False)
    torch_optimizer = make_optimizer(spec.training.optimizer, list(network.parameters()))
    network(torch.randn(2, 64)).sum().backward()
    torch_optimizer.step()
    kept = sum(v.numel() for state in torch_optimizer.state.values() for v in state.values() if torch.is_tensor(v) and v.ndim)
    assert kept == optimizer_state_copies(spec.training.optimizer) * torch_count(spec.model)


def test_a_model_over_the_memory_limit_names_the_layer_the_figure_and_the_limit() -> None:
    layers = [{"type": "Dense", "units": 4096}, {"type": "Dense", "units": 4096}, {"type": "Dense", "units": 10}]
    spec = job(layers, batch_size=32)
    needed = footprints(spec)
    assert needed[0].memory_mb <= 100 < needed[1].memory_mb
    with pytest.raises(InvalidSpec) as refused:
        check_budget(spec, Budget(max_parameters=100_000_000, max_training_memory_mb=100))
    message = refused.value.message
    assert message.startswith(f"layer 1 'dense_1' (Dense): training needs about {needed[1].memory_mb:,} MB")
    assert message.endswith("over KILN_MAX_TRAINING_MEMORY_MB=100") and "adam" in message and "batch of 32" in message


def test_a_larger_batch_needs_more_memory() -> None:
    layers = [{"type": "Conv2D", "filters": 64, "kernel_size": 3, "padding": "same"}, {"type": "Flatten"}, {"type": "Dense", "units": 10}]
    small, large = (footprints(job(layers, input_shape=[8, 8, 1], batch_size=b))[-1].memory_bytes for b in (8, 4096))
    assert large - small == 4 * (4096 - 8) * (64 + 8 * 8 * 64 * 2 + 10)
