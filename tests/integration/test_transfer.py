"""Transfer learning on both registries with a real worker's code: a base version's layers are copied (frozen ones
bit for bit), its lineage is kept, and a base that cannot serve is refused by name."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from services.data.builtins import load_builtin
from services.data.catalogue import BUILTIN_DATASETS
from services.errors import Conflict, InvalidSpec, NotFound
from services.registry.entities import JobState, NewVersion
from services.spec import JobSpec
from services.training import checkpoint
from services.training.pipeline import BaseWeights, Checkpointing, load_weights
from services.usecases.jobs import _check_against_dataset, get_job
from services.usecases.training import WorkerContext, run_job
from services.usecases.transfer import with_base
from services.usecases.versions import lineage
from tests.factories import job_body
from tests.interrupted import train_until

PARENT = job_body(model_name="base-mlp", training={"epochs": 3}) | {"model": {"input_shape": [64], "layers": [
    {"name": "features", "type": "Dense", "units": 32, "activation": "relu"},
    {"name": "embedding", "type": "Dense", "units": 16, "activation": "relu"},
    {"name": "classes", "type": "Dense", "units": 10, "activation": "softmax"}]}}  # fmt: skip


def _child(**base: Any) -> dict[str, Any]:
    return job_body(model_name="child", training={"epochs": 2}) | {"model": {
        "base": {"model": "base-mlp", **base}, "layers": [{"type": "Dense", "units": 10, "activation": "softmax"}]}}  # fmt: skip


def _run(ctx: WorkerContext, body: dict[str, Any]) -> Any:
    spec = with_base(JobSpec.model_validate(body), uow_factory=ctx.uow_factory)
    job_id = uuid.uuid4()
    with ctx.uow_factory() as uow:
        uow.jobs.add(job_id=job_id, model_name=spec.model_name, spec=spec.model_dump(mode="json"), queue="cpu")
        uow.commit()
    run_job(job_id, ctx)
    job = get_job(job_id, uow_factory=ctx.uow_factory)
    assert job.state == JobState.SUCCEEDED, job.error
    with ctx.uow_factory() as uow:
        return uow.models.get_version(spec.model_name, job.version)


@pytest.fixture
def parent(ctx: WorkerContext) -> Any:
    return _run(ctx, PARENT)


def test_a_frozen_base_is_copied_bit_for_bit_and_the_child_keeps_its_lineage(ctx: WorkerContext, parent: Any) -> None:
    child = _run(ctx, _child(version=parent.version))
    assert child.parent == {"model": "base-mlp", "version": 1, "alias": None, "until": "embedding",
                            "layers": ["features", "embedding"], "frozen": ["features", "embedding"], "unfrozen": []}  # fmt: skip
    mine, theirs = (load_weights(ctx.store.path_for(v.weights_sha256)) for v in (child, parent))
    for key in [k for k in theirs if k.startswith(("body.layers.features.", "body.layers.embedding."))]:
        assert mine[key].dtype == theirs[key].dtype and mine[key].numpy().tobytes() == theirs[key].numpy().tobytes(), key
    assert not any(k.startswith("body.layers.classes.") for k in mine)  # the base's top is not taken (include_top=False)
    assert child.metrics["test_accuracy"] > 0.5
    chain = lineage("child", child.version, uow_factory=ctx.uow_factory)
    assert [(c["model"], c["version"]) for c in chain] == [("child", 1), ("base-mlp", 1)]
    assert chain[1]["parent"] is None and chain[0]["dataset"]["sha256"] == chain[1]["dataset"]["sha256"]


def test_a_trainable_base_trains_and_until_keeps_a_prefix(ctx: WorkerContext, parent: Any) -> None:
    child = _run(ctx, _child(alias=None, until="features", trainable=True))
    assert child.parent["layers"] == ["features"] and child.parent["unfrozen"] == ["features"]
    mine, theirs = (load_weights(ctx.store.path_for(v.weights_sha256)) for v in (child, parent))
    assert not (mine["body.layers.features.0.weight"] == theirs["body.layers.features.0.weight"]).all()  # it trained


def test_bases_that_cannot_serve_are_refused_by_name(ctx: WorkerContext, parent: Any) -> None:
    with pytest.raises(NotFound) as missing:
        with_base(
            JobSpec.model_validate(_child() | {"model": _child()["model"] | {"base": {"model": "nope"}}}), uow_factory=ctx.uow_factory
        )
    assert missing.value.field == "model.base.model"
    with pytest.raises(NotFound) as no_version:
        with_base(JobSpec.model_validate(_child(version=9)), uow_factory=ctx.uow_factory)
    assert no_version.value.field == "model.base.version"
    with pytest.raises(InvalidSpec) as until:
        with_base(JobSpec.model_validate(_child(until="conv")), uow_factory=ctx.uow_factory)
    assert until.value.field == "model.base.until" and "'features'" in until.value.message
    with ctx.uow_factory() as uow:  # a version with no PyTorch weights, as every version registered before them
        kept = ("artifact_sha256", "artifact_size", "signature", "metrics", "spec", "hyperparameters", "dataset", "task")
        uow.models.add_version(NewVersion(model_name="old", job_id=None, **{f: getattr(parent, f) for f in kept}))
        uow.commit()
    with pytest.raises(Conflict, match="uploaded as ONNX"):
        with_base(JobSpec.model_validate(_child() | {"model": _child()["model"] | {"base": {"model": "old"}}}), uow_factory=ctx.uow_factory)
    spec = with_base(JobSpec.model_validate(_child() | {"data": {"dataset": "iris"}}), uow_factory=ctx.uow_factory)
    with pytest.raises(InvalidSpec) as shape:
        _check_against_dataset(spec, BUILTIN_DATASETS["iris"])
    assert shape.value.field == "model.base" and "version 1 of 'base-mlp'" in shape.value.message and "[64]" in shape.value.message


def test_fine_tuning_unfreezes_the_last_base_layers_at_their_own_rate_and_resumes_bit_for_bit(
    ctx: WorkerContext, parent: Any, tmp_path: Any
) -> None:
    body = _child(version=1) | {"training": {"loss": "sparse_categorical_crossentropy", "epochs": 4, "optimizer": {"name": "adam"},
                                             "fine_tune": {"after_epoch": 2, "unfreeze": 1, "learning_rate": 1e-3}}}  # fmt: skip
    child = _run(ctx, body)
    assert child.parent["frozen"] == ["features"] and child.parent["unfrozen"] == ["embedding"]
    mine, theirs = (load_weights(ctx.store.path_for(v.weights_sha256)) for v in (child, parent))
    assert mine["body.layers.features.0.weight"].numpy().tobytes() == theirs["body.layers.features.0.weight"].numpy().tobytes()
    assert not (mine["body.layers.embedding.0.weight"] == theirs["body.layers.embedding.0.weight"]).all()  # fine-tuned
    spec = with_base(JobSpec.model_validate(body), uow_factory=ctx.uow_factory)
    base = BaseWeights(load_weights(ctx.store.path_for(parent.weights_sha256)), ["input"])
    data = load_builtin("digits")

    def train(name: str, resume: dict | None = None, stop_after: int | None = None) -> Any:
        outcome, _ = train_until(spec, data, tmp_path / f"{name}.onnx", parity=ctx.parity, base_weights=base, stop_after=stop_after,
                                 checkpointing=Checkpointing(tmp_path / f"{name}.pt", resume))  # fmt: skip
        return outcome

    whole = train("whole")
    for stop in (2, 3):  # before the phase change, and after it
        train(f"cut{stop}", stop_after=stop)
        state = checkpoint.load(tmp_path / f"cut{stop}.pt")
        assert state["kind"]["phase"] == (1 if stop == 3 else 0)
        resumed = train(f"resumed{stop}", resume=state)
        assert [r.metrics for r in resumed.history] == [r.metrics for r in whole.history]
        assert (tmp_path / f"resumed{stop}.onnx").read_bytes() == (tmp_path / "whole.onnx").read_bytes()


@pytest.mark.parametrize(("fine_tune", "base", "field"),
                         [({"after_epoch": 5}, {}, "training.fine_tune.after_epoch"),
                          ({"after_epoch": 1, "unfreeze": 3}, {}, "training.fine_tune.unfreeze"),
                          ({"after_epoch": 1}, {"trainable": True}, "training.fine_tune")])  # fmt: skip
def test_fine_tuning_that_cannot_work_is_refused(ctx: WorkerContext, parent: Any, fine_tune: dict, base: dict, field: str) -> None:
    body = _child(**base)
    body["training"] |= {"epochs": 3, "fine_tune": fine_tune}
    spec = with_base(JobSpec.model_validate(body), uow_factory=ctx.uow_factory)
    with pytest.raises(InvalidSpec) as caught:
        _check_against_dataset(spec, BUILTIN_DATASETS["digits"])
    assert caught.value.field == field


def test_the_whole_base_can_be_kept_with_its_lifted_softmax(ctx: WorkerContext, parent: Any) -> None:
    """until the top layer (include_top=True): the base stored it bare (its softmax lifted), the child wraps it."""
    child = _run(ctx, _child(until="classes") | {"model": _child(until="classes")["model"] | {"layers": [{"type": "Dense", "units": 10}]}}
                 | {"training": {"loss": "sparse_categorical_crossentropy", "epochs": 1}})  # fmt: skip
    mine, theirs = (load_weights(ctx.store.path_for(v.weights_sha256)) for v in (child, parent))
    assert mine["body.layers.classes.0.weight"].numpy().tobytes() == theirs["body.layers.classes.weight"].numpy().tobytes()


def test_what_kiln_fills_in_or_a_clashing_name_is_refused(ctx: WorkerContext, parent: Any) -> None:
    with pytest.raises(InvalidSpec) as sent:
        with_base(
            JobSpec.model_validate(
                _child(version=1, layers=["features"])
                | {"model": _child()["model"] | {"base": {"model": "base-mlp", "version": 1, "layers": ["features"]}, "input_shape": [64]}}
            ),  # fmt: skip
            uow_factory=ctx.uow_factory,
        )
    assert sent.value.field == "model.base.layers"
    body = _child()
    body["model"]["layers"] = [{"name": "features", "type": "Dense", "units": 10, "activation": "softmax"}]
    with pytest.raises(InvalidSpec, match="'features' has the name of a base layer"):
        with_base(JobSpec.model_validate(body), uow_factory=ctx.uow_factory)


def test_fine_tuning_a_regularized_base_layer_is_refused_and_a_lost_parent_is_shown(ctx: WorkerContext) -> None:
    regularized = copy.deepcopy(PARENT)
    regularized["model"]["layers"][1]["kernel_regularizer"] = "l2"
    parent = _run(ctx, regularized)
    body = _child(version=parent.version)
    body["training"] |= {"epochs": 3, "fine_tune": {"after_epoch": 1}}
    with pytest.raises(InvalidSpec, match="'embedding' has kernel_regularizer") as caught:
        _check_against_dataset(with_base(JobSpec.model_validate(body), uow_factory=ctx.uow_factory), BUILTIN_DATASETS["digits"])
    assert caught.value.field == "training.fine_tune"
    with ctx.uow_factory() as uow:  # a child whose parent's record is not in this registry
        kept = ("artifact_sha256", "artifact_size", "signature", "metrics", "spec", "hyperparameters", "dataset", "task")
        uow.models.add_version(NewVersion(model_name="orphan", job_id=None, parent={"model": "gone", "version": 4},
                                          **{f: getattr(parent, f) for f in kept}))  # fmt: skip
        uow.commit()
    chain = lineage("orphan", 1, uow_factory=ctx.uow_factory)
    assert chain[-1] == {"model": "gone", "version": 4, "missing": True} and len(chain) == 2
