"""Named layers and functional models: resolution and its refusals, training, export with every output, parity, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from services.data.builtins import load_builtin
from services.errors import InvalidSpec
from services.spec import JobSpec, ModelSpec, check_job_against_dataset, resolve
from services.training import checkpoint
from services.training.builder import build_network
from services.training.pipeline import Checkpointing, ParityCheck, train_and_export
from tests.factories import job_body
from tests.interrupted import train_until

SKIP = {  # the example: a skip connection around a hidden layer, and the input concatenated back in
    "inputs": [{"name": "x", "shape": [64]}],
    "layers": [
        {"name": "h1", "type": "Dense", "units": 32, "activation": "relu", "inputs": ["x"]},
        {"name": "h2", "type": "Dense", "units": 32, "activation": "relu"},
        {"name": "skip", "type": "Add", "inputs": ["h1", "h2"]},
        {"name": "joined", "type": "Concatenate", "inputs": ["skip", "x"]},
        {"name": "out", "type": "Dense", "units": 10, "activation": "softmax"},
    ],
    "outputs": ["out", "h1"],
}
TWO_INPUTS = {  # digits' 64 pixels arrive as two inputs: the top 5 rows and the bottom 3
    "inputs": [{"name": "top", "shape": [40]}, {"name": "bottom", "shape": [3, 8]}],
    "layers": [
        {"name": "flat", "type": "Flatten", "inputs": ["bottom"]},
        {"name": "both", "type": "Concatenate", "inputs": ["top", "flat"]},
        {"name": "hidden", "type": "Dense", "units": 32, "activation": "relu"},
        {"name": "out", "type": "Dense", "units": 10, "activation": "softmax"},
    ],
}


def _job(model: dict[str, Any], **sections: Any) -> JobSpec:
    """The digits job with `model` in place of its own (job_body would merge the two)."""
    return JobSpec.model_validate(job_body(**sections) | {"model": model})


def _train(model: dict[str, Any], tmp_path: Path, **sections: Any) -> tuple[JobSpec, Any]:
    spec = _job(model, training={"epochs": 8, "optimizer": {"name": "adam", "learning_rate": 0.01}, **sections.pop("training", {})},
                **sections)  # fmt: skip
    data = load_builtin("digits")
    check_job_against_dataset(spec, data.info)
    outcome = train_and_export(spec, data, device=torch.device("cpu"), onnx_path=tmp_path / "m.onnx",
                               parity=ParityCheck(rows=256, atol=1e-4, rtol=1e-3), on_epoch_end=lambda r: None)  # fmt: skip
    return spec, outcome


def _refusal(model: dict[str, Any]) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as refused:
        resolve(ModelSpec.model_validate(model))
    return refused.value


def test_unnamed_layers_get_keras_automatic_names_around_the_names_given() -> None:
    layers = [{"type": "Conv2D", "filters": 2, "kernel_size": 3}, {"type": "MaxPooling2D"},
              {"type": "Conv2D", "filters": 2, "kernel_size": 1},
              {"type": "Flatten", "name": "dense_1"}, {"type": "Dense", "units": 3}, {"type": "Dense", "units": 3}]  # fmt: skip
    model = ModelSpec.model_validate({"input_shape": [9, 9, 1], "layers": layers})
    assert [layer.name for layer in model.layers] == ["conv2d", "max_pooling2d", "conv2d_1", "dense_1", "dense", "dense_2"]
    assert model.model_dump()["layers"][4]["name"] == "dense"  # the stored spec keeps them


@pytest.mark.parametrize(
    ("model", "field", "words"),
    [
        ({"input_shape": [4], "layers": [{"type": "Dense", "units": 2, "name": "a"}, {"type": "Dense", "units": 2, "name": "a"}]},
         "model.layers[1].name", ["'a'", "more than once"]),
        ({"inputs": [{"name": "x", "shape": [4]}], "layers": [{"type": "Dense", "units": 2, "name": "x"}]},
         "model.layers[0].name", ["'x'", "more than once"]),
        ({"inputs": [{"name": "x", "shape": [4]}], "layers": [{"type": "Dense", "units": 2, "inputs": ["y"]}]},
         "model.layers[0].inputs", ["layer 0 'dense' (Dense)", "'y'", "known names are dense, x"]),
        ({"inputs": [{"name": "x", "shape": [4]}], "layers": [
            {"type": "Dense", "units": 4, "name": "a", "inputs": ["b"]}, {"type": "Dense", "units": 4, "name": "b", "inputs": ["a"]}]},
         "model.layers[0].inputs", ["cycle", "'a', 'b'"]),
        ({"inputs": [{"name": "x", "shape": [4]}], "layers": [
            {"type": "Dense", "units": 3, "name": "a"}, {"type": "Add", "inputs": ["a", "x"]}]},
         "model.layers[1]", ["layer 1 'add' (Add)", "(None, 3), (None, 4)"]),
        ({"inputs": [{"name": "x", "shape": [4]}], "layers": [
            {"type": "Reshape", "target_shape": [2, 2], "name": "r"}, {"type": "Concatenate", "inputs": ["r", "x"]}]},
         "model.layers[1]", ["layer 1 'concatenate' (Concatenate)", "one rank", "(None, 2, 2), (None, 4)"]),
        ({"inputs": [{"name": "x", "shape": [4]}], "layers": [{"type": "Subtract", "inputs": ["x", "x", "x"]}]},
         "model.layers[0]", ["exactly 2 inputs, got 3"]),
        ({"inputs": [{"name": "x", "shape": [4]}, {"name": "y", "shape": [4]}], "layers": [{"type": "Dense", "units": 2}]},
         "model.layers[0].inputs", ["does not say which input", "has 2"]),
        ({"inputs": [{"name": "x", "shape": [4]}, {"name": "y", "shape": [4]}], "layers": [{"type": "Dense", "units": 2, "inputs": ["x"]}]},
         "model.inputs", ["input 'y'", "no layer"]),
        ({"inputs": [{"name": "x", "shape": [4]}], "layers": [
            {"type": "Dense", "units": 2, "name": "lost"}, {"type": "Dense", "units": 2, "inputs": ["x"]}]},
         "model.layers[0]", ["'lost'", "leads to no output"]),
        ({"inputs": [{"name": "x", "shape": [4]}], "layers": [{"type": "Dense", "units": 2}], "outputs": ["nope"]},
         "model.outputs[0]", ["'nope' is not a layer"]),
        ({"inputs": [{"name": "x", "shape": [4]}],
          "layers": [{"type": "Dense", "units": 2}, {"type": "Embedding", "input_dim": 4, "output_dim": 2}]},
         "model.layers[1]", ["must read a model input"]),
    ],
)  # fmt: skip
def test_a_graph_that_cannot_be_built_is_refused_naming_the_layer_and_what_it_received(
    model: dict[str, Any], field: str, words: list[str]
) -> None:
    refused = _refusal(model)
    assert refused.field == field, refused.message
    for word in words:
        assert word in refused.message, refused.message


def test_functional_layers_may_be_listed_in_any_order() -> None:
    shuffled = dict(SKIP, layers=[SKIP["layers"][i] for i in (4, 3, 2, 1, 0)])
    shuffled["layers"][3] = dict(shuffled["layers"][3], inputs=["h1"])  # h2 no longer follows h1 in the list
    shuffled["layers"][0] = dict(shuffled["layers"][0], inputs=["joined"])
    graph = resolve(ModelSpec.model_validate(shuffled))
    assert [n.name for n in graph.nodes] == ["h1", "h2", "skip", "joined", "out"]
    assert graph.output.shape == (10,) and graph.node("joined").shape == (96,)


def test_a_skip_connection_model_trains_exports_every_output_and_agrees_with_onnx(tmp_path: Path) -> None:
    spec, outcome = _train(SKIP, tmp_path)
    assert outcome.metrics["test_accuracy"] > 0.9, outcome.metrics
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["out", "h1"]
    assert any("/h1/" in node.name for node in model.graph.node) and any("/skip/" in node.name for node in model.graph.node)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = load_builtin("digits").x_test[:5].astype(np.float32)
    probabilities, hidden = session.run(None, {"x": x})
    assert probabilities.shape == (5, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)  # the head is exported
    assert hidden.shape == (5, 32) and (hidden >= 0).all()  # the bottleneck as it is, after its relu
    network = build_network(spec.model, fuse_output_activation=True)
    assert set(network.state_dict()) >= {"body.layers.h1.0.weight", "body.layers.out.weight"}  # checkpoints carry the names


def test_a_two_input_model_splits_each_row_among_its_inputs(tmp_path: Path) -> None:
    _, outcome = _train(TWO_INPUTS, tmp_path, data={"normalization": "standard"})
    assert outcome.metrics["test_accuracy"] > 0.9
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("top", [40]), ("bottom", [3, 8])]
    digits = load_builtin("digits")
    rows = digits.x_test.astype(np.float32)
    (probabilities,) = session.run(None, {"top": rows[:, :40], "bottom": rows[:, 40:].reshape(-1, 3, 8)})
    accuracy = (probabilities.argmax(axis=1) == digits.y_test).mean()
    assert accuracy == pytest.approx(outcome.metrics["test_accuracy"], abs=1e-6)  # ONNX, fed by name, is the model that was tested


def test_a_two_input_model_that_does_not_fit_the_dataset_names_both_inputs() -> None:
    model = dict(TWO_INPUTS, inputs=[{"name": "top", "shape": [40]}, {"name": "bottom", "shape": [2, 8]}])
    with pytest.raises(InvalidSpec, match=r"the inputs hold 56 \(top \[40\] \+ bottom \[2, 8\]") as refused:
        check_job_against_dataset(_job(model), load_builtin("digits").info)
    assert refused.value.field == "model.inputs[0].shape"


def test_a_graph_resumes_from_its_checkpoint_exactly(tmp_path: Path) -> None:
    spec = _job(SKIP, training={"epochs": 4}, data={"validation_split": 0.2})
    data = load_builtin("digits")

    def run(epochs_path: Path, resume: dict[str, Any] | None, stop_after: int | None) -> list[Any]:
        _, seen = train_until(spec, data, tmp_path / "m.onnx", parity=ParityCheck(rows=64, atol=1e-4, rtol=1e-3),
                              checkpointing=Checkpointing(epochs_path, resume), stop_after=stop_after)  # fmt: skip
        return seen

    whole = run(tmp_path / "a.pt", None, None)
    run(tmp_path / "b.pt", None, 2)
    state = checkpoint.load(tmp_path / "b.pt")
    assert any(key.startswith("body.layers.skip") or key.startswith("body.layers.h2") for key in state["kind"]["model"])
    resumed = run(tmp_path / "c.pt", state, None)
    assert [r.epoch for r in resumed] == [3, 4]
    assert [r.metrics["val_loss"] for r in resumed] == [r.metrics["val_loss"] for r in whole[2:]]


def test_a_functional_models_outputs_are_named_by_their_layers_even_when_not_listed(tmp_path: Path) -> None:
    model = ModelSpec.model_validate(TWO_INPUTS | {"inputs": [{"name": "output", "shape": [40]}, {"name": "bottom", "shape": [3, 8]}],
                                                   "layers": [dict(TWO_INPUTS["layers"][1], inputs=["output", "flat"]),
                                                              *[TWO_INPUTS["layers"][i] for i in (0, 2, 3)]]})  # fmt: skip
    assert model.export_names == (["output", "bottom"], ["out"])  # an input may be called "output": the output is "out"
    assert ModelSpec.model_validate({"input_shape": [4], "layers": [{"type": "Dense", "units": 2}]}).export_names == (["input"], ["output"])


def test_automatic_names_step_around_the_inputs_names() -> None:
    model = ModelSpec.model_validate({"inputs": [{"name": "dense", "shape": [4]}], "layers": [{"type": "Dense", "units": 2}]})
    assert model.layers[0].name == "dense_1"
    refused = _refusal({"input_shape": [4], "layers": [{"type": "Dense", "units": 2, "name": "input"}]})
    assert "names a Sequential model's input" in refused.message


def test_a_model_with_nothing_to_train_is_refused_at_submission() -> None:
    frozen = {"input_shape": [64], "layers": [{"type": "Dense", "units": 10, "trainable": False, "name": "only"}]}
    with pytest.raises(InvalidSpec, match="no weights to train.*'only'") as refused:
        check_job_against_dataset(_job(frozen), load_builtin("digits").info)
    assert refused.value.field == "model.layers"


def test_every_embedding_is_checked_against_the_vocabulary() -> None:
    model = {"inputs": [{"name": "a", "shape": [10]}, {"name": "b", "shape": [10]}], "layers": [
        {"type": "Embedding", "input_dim": 100, "output_dim": 4, "inputs": ["a"], "name": "ea"},
        {"type": "Embedding", "input_dim": 2, "output_dim": 4, "inputs": ["b"], "name": "eb"},
        {"type": "Concatenate", "inputs": ["ea", "eb"]}, {"type": "GlobalAveragePooling1D"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"}]}  # fmt: skip
    body = job_body(data={"dataset": "tokens"}, training={"loss": "binary_crossentropy"}) | {"model": model}
    with pytest.raises(InvalidSpec, match="'eb' \\(Embedding\\) has input_dim 2") as refused:
        check_job_against_dataset(JobSpec.model_validate(body), load_builtin("tokens").info)
    assert refused.value.field == "model.layers[1].input_dim"
