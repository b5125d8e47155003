"""The spec language: Keras names, shape inference and the checks a job passes at submission."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.data.catalogue import BUILTIN_DATASETS, get_dataset_info
from services.errors import InvalidSpec
from services.spec import JobSpec, ModelSpec, check_job_against_dataset, infer_shapes
from tests.factories import job_body


def model(input_shape: list[int], *layers: dict) -> ModelSpec:
    return ModelSpec.model_validate({"input_shape": input_shape, "layers": list(layers)})


def test_issue_example_body_parses_with_keras_defaults() -> None:
    spec = JobSpec.model_validate(job_body())
    assert spec.device == "auto"
    assert spec.training.seed == 0
    assert spec.model.layers[0].use_bias is True  # type: ignore[union-attr]


def test_optimizer_may_be_given_by_name_as_in_keras_compile() -> None:
    spec = JobSpec.model_validate(job_body(training={"optimizer": "sgd"}))
    assert spec.training.optimizer.name == "sgd"
    assert spec.training.optimizer.learning_rate == pytest.approx(0.001)


def test_misspelt_argument_is_refused_not_ignored() -> None:
    body = job_body()
    body["model"]["layers"][0]["activaton"] = "relu"
    with pytest.raises(ValidationError, match="activaton"):
        JobSpec.model_validate(body)


def test_dense_then_flatten_shapes() -> None:
    shapes = infer_shapes(model([8, 8], {"type": "Flatten"}, {"type": "Dense", "units": 5}, {"type": "Dropout", "rate": 0.5}))
    assert shapes == [(64,), (5,), (5,)]


def test_dense_on_unflattened_input_names_layer_and_fix() -> None:
    with pytest.raises(InvalidSpec) as err:
        infer_shapes(model([8, 8], {"type": "Activation", "activation": "relu"}, {"type": "Dense", "units": 5}))
    assert err.value.message == "layer 1 'dense' (Dense) needs a flat input, got (None, 8, 8): add Flatten before it"
    assert err.value.field == "model.layers[1]"


def test_input_shape_must_match_dataset_feature_count() -> None:
    spec = JobSpec.model_validate(job_body(model={"input_shape": [63]}))
    with pytest.raises(InvalidSpec, match="'digits' has 64 features per sample \\(64,\\), but input_shape \\[63\\] holds 63") as err:
        check_job_against_dataset(spec, get_dataset_info("digits"))
    assert err.value.field == "model.input_shape"


def test_reshaped_input_is_accepted_when_element_counts_agree() -> None:
    body = job_body(model={"input_shape": [8, 8], "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"}]})
    shapes = check_job_against_dataset(JobSpec.model_validate(body), get_dataset_info("digits"))
    assert shapes[-1] == (10,)


def test_output_units_must_match_class_count() -> None:
    body = job_body(model={"input_shape": [64], "layers": [{"type": "Dense", "units": 3, "activation": "softmax"}]})
    with pytest.raises(InvalidSpec, match="set units=10 on the last Dense"):
        check_job_against_dataset(JobSpec.model_validate(body), get_dataset_info("digits"))


@pytest.mark.parametrize(
    ("dataset", "features", "loss", "units", "activation", "expected"),
    [
        ("digits", 64, "binary_crossentropy", 1, "sigmoid", "needs 2 classes"),
        ("breast_cancer", 30, "binary_crossentropy", 1, "softmax", "1 unit with activation 'sigmoid'"),
        ("breast_cancer", 30, "binary_crossentropy", 2, "sigmoid", "1 unit with activation 'sigmoid'"),
        ("iris", 4, "mse", 1, "linear", "needs a regression dataset"),
        ("diabetes", 10, "sparse_categorical_crossentropy", 1, "linear", "is regression: use mse"),
        ("diabetes", 10, "mse", 2, "linear", r"end with Dense\(1\)"),
        ("wine", 13, "sparse_categorical_crossentropy", 3, "sigmoid", "not 'sigmoid'"),
    ],
)
def test_loss_must_fit_dataset_and_last_layer(dataset: str, features: int, loss: str, units: int, activation: str, expected: str) -> None:
    body = job_body(
        model={"input_shape": [features], "layers": [{"type": "Dense", "units": units, "activation": activation}]},
        data={"dataset": dataset},
        training={"loss": loss},
    )
    with pytest.raises(InvalidSpec, match=expected):
        check_job_against_dataset(JobSpec.model_validate(body), get_dataset_info(dataset))


@pytest.mark.parametrize(
    ("dataset", "loss", "units", "activation"),
    [
        ("breast_cancer", "binary_crossentropy", 1, "sigmoid"),
        ("iris", "sparse_categorical_crossentropy", 3, "linear"),
        ("diabetes", "mse", 1, "linear"),
    ],
)
def test_every_builtin_task_has_a_valid_setup(dataset: str, loss: str, units: int, activation: str) -> None:
    info = BUILTIN_DATASETS[dataset]
    body = job_body(
        model={"input_shape": [info.n_features], "layers": [{"type": "Dense", "units": units, "activation": activation}]},
        data={"dataset": dataset},
        training={"loss": loss},
    )
    assert check_job_against_dataset(JobSpec.model_validate(body), info) == [(units,)]


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(
        InvalidSpec,
        match=r"unknown dataset .mnist.: expected a built-in \(breast_cancer, diabetes, digits, digits28, iris, shapes, sine, "
        r"tokens, wine\) or the id of an uploaded dataset",
    ):
        get_dataset_info("mnist")
