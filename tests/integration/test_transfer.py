"""Transfer learning on both registries with a real worker's code: a base version's layers are copied (frozen ones
bit for bit), its lineage is kept, and a base that cannot serve is refused by name."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.data.catalogue import BUILTIN_DATASETS
from services.errors import Conflict, InvalidSpec, NotFound
from services.registry.entities import JobState, NewVersion
from services.spec import JobSpec
from services.training.pipeline import load_weights
from services.usecases.jobs import _check_against_dataset, get_job
from services.usecases.training import WorkerContext, run_job
from services.usecases.transfer import with_base
from services.usecases.versions import lineage
from tests.factories import job_body

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
