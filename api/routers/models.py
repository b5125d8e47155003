"""`/v1/models`: registered models, their versions and aliases, artifacts, and uploaded ONNX models."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from starlette.concurrency import run_in_threadpool

from api.deps import ContextDep
from api.schemas import AliasedVersionPublic, AliasPublic, ModelPublic, ModelsPublic, RolloutPublic, VersionPublic, VersionsPublic
from api.uploads import receive_upload
from services.errors import Conflict, InvalidInput
from services.registry.entities import MAX_VERSION
from services.usecases.byo import register_onnx
from services.usecases.models import get_version, keras_architecture, list_models, list_versions, model_aliases
from services.usecases.rollouts import MAX_SPLIT, MAX_WEIGHT, model_rollouts, read_rollout, rollout_of, rollout_versions, set_rollout
from services.usecases.versions import delete_alias, lineage, set_serving

router = APIRouter(prefix="/v1/models", tags=["models"])
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]
AliasName = Annotated[str, Path(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]


class WeightedVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: StrictInt = Field(ge=1, le=MAX_VERSION)
    weight: StrictInt = Field(ge=1, le=MAX_WEIGHT, description="Relative: 90 and 10, or 9 and 1, split alike.")


class AliasUpdate(BaseModel):
    """`{"version": 3}`, or a split by weight, `{"versions": [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}]}`;
    either may add `"mirror": 5`, a version that gets a copy of each request."""

    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    versions: list[WeightedVersion] | None = Field(default=None, min_length=1, max_length=MAX_SPLIT)
    mirror: StrictInt | None = Field(default=None, ge=1, le=MAX_VERSION)


class ServingUpdate(BaseModel):
    max_batch_size: StrictInt | None = Field(default=None, ge=1, le=65_536)  # strict: `true` is not 1
    max_queue_delay_ms: float | None = Field(default=None, ge=0, le=1000)

    @field_validator("max_queue_delay_ms", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number of milliseconds, got a boolean")
        return value


@router.get("", response_model=ModelsPublic)
def read_models(ctx: ContextDep) -> ModelsPublic:
    """Every registered model with its latest version."""
    found = list_models(uow_factory=ctx.uow_factory)
    return ModelsPublic(data=[ModelPublic.of(m) for m in found], count=len(found))


@router.get("/{name}", response_model=ModelPublic)
def read_model(name: str, ctx: ContextDep) -> ModelPublic:
    """One model: its latest version and its aliases."""
    summary, aliases = model_aliases(name, uow_factory=ctx.uow_factory)
    return ModelPublic.of(summary, aliases, model_rollouts(name, uow_factory=ctx.uow_factory))


@router.get("/{name}/versions", response_model=VersionsPublic)
def read_versions(name: str, ctx: ContextDep) -> VersionsPublic:
    """A model's versions, oldest first."""
    found = list_versions(name, uow_factory=ctx.uow_factory)
    _, aliases = model_aliases(name, uow_factory=ctx.uow_factory)
    return VersionsPublic(data=[VersionPublic.of(v, aliases) for v in found], count=len(found))


@router.post("/{name}/versions", status_code=status.HTTP_201_CREATED, response_model=VersionPublic)
async def create_version(name: str, request: Request, ctx: ContextDep, response: Response) -> VersionPublic:
    """Register your own ONNX file (multipart `file`, optional `labels` as a JSON list) as the next version."""
    target = ctx.datasets.staging() / "model.onnx"
    try:
        received, fields = await receive_upload(request, target=target, max_bytes=ctx.settings.max_model_mb * 2**20)
        labels = _labels(fields.get("labels"))
        version = await run_in_threadpool(register_onnx, name, received, labels=labels, uow_factory=ctx.uow_factory, store=ctx.store,
                                          load_timeout_s=ctx.settings.onnx_load_timeout_s)  # fmt: skip
    finally:
        ctx.datasets.remove(target.parent)
    ctx.predictor.forget(name)  # a miss remembered a moment ago would hide the new version for KILN_RESOLVE_CACHE_S
    response.headers["Location"] = f"/v1/models/{name}/versions/{version.version}"
    return VersionPublic.of(version, {})


def _labels(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    try:
        labels = json.loads(raw)
    except json.JSONDecodeError:
        labels = None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise InvalidInput('labels: expected a JSON list of class names, e.g. ["cat", "dog"]', field="labels")
    return labels


@router.get("/{name}/versions/{version}", response_model=VersionPublic)
def read_version(name: str, version: VersionNumber, ctx: ContextDep) -> VersionPublic:
    """One version: signature, labels, metrics, lineage and aliases."""
    found = get_version(name, version, uow_factory=ctx.uow_factory)
    return VersionPublic.of(found, model_aliases(name, uow_factory=ctx.uow_factory)[1])


@router.patch("/{name}/versions/{version}", response_model=VersionPublic)
def update_version(name: str, version: VersionNumber, body: ServingUpdate, ctx: ContextDep) -> VersionPublic:
    """Override this version's dynamic batching (`max_batch_size`, `max_queue_delay_ms`)."""
    updated = set_serving(name, version, body.model_dump(exclude_none=True), uow_factory=ctx.uow_factory)
    ctx.predictor.forget(name)
    return VersionPublic.of(updated, model_aliases(name, uow_factory=ctx.uow_factory)[1])


@router.get("/{name}/versions/{version}/artifact", response_class=FileResponse)
def read_artifact(name: str, version: VersionNumber, ctx: ContextDep, request: Request) -> Response:
    """The ONNX file; its sha256 is the ETag."""
    found = get_version(name, version, uow_factory=ctx.uow_factory)
    etag = f'"{found.artifact_sha256}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return FileResponse(ctx.store.path_for(found.artifact_sha256), media_type="application/octet-stream",
                        filename=f"{name}-{version}.onnx", headers={"ETag": etag})  # fmt: skip


@router.get("/{name}/versions/{version}/weights", response_class=FileResponse)
def read_weights(name: str, version: VersionNumber, ctx: ContextDep, request: Request) -> Response:
    """The version's PyTorch state dict as safetensors (`safetensors.torch.load_file`), keyed by layer name; its sha256 is
    the ETag. A 409 for a version registered before weights were kept, or uploaded as ONNX."""
    found = get_version(name, version, uow_factory=ctx.uow_factory)
    if found.weights_sha256 is None:
        what = "was uploaded as ONNX" if found.job_id is None else "was registered before Kiln kept weights"
        raise Conflict(f"version {version} of '{name}' {what}: it has no PyTorch weights", field="version")
    etag = f'"{found.weights_sha256}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return FileResponse(ctx.store.path_for(found.weights_sha256), media_type="application/octet-stream",
                        filename=f"{name}-{version}.safetensors", headers={"ETag": etag})  # fmt: skip


@router.get("/{name}/versions/{version}/lineage")
def read_lineage(name: str, version: VersionNumber, ctx: ContextDep) -> dict[str, Any]:
    """The version's ancestry back to its first ancestor: each version's job, dataset (by hash), and the layers it copied
    from its parent (which frozen, which trained)."""
    return {"model": name, "version": version, "lineage": lineage(name, version, uow_factory=ctx.uow_factory)}


@router.get("/{name}/versions/{version}/keras")
def read_keras(name: str, version: VersionNumber, ctx: ContextDep) -> dict[str, Any]:
    """The version's architecture as Keras 3 JSON (`model.to_json()`'s format): `keras.models.model_from_json` loads it."""
    return keras_architecture(name, version, uow_factory=ctx.uow_factory)


@router.get("/{name}/aliases/{alias}", response_model=AliasPublic)
def read_alias(name: str, alias: AliasName, ctx: ContextDep) -> AliasPublic:
    """An alias: its version, or the versions it splits requests between with their weights, and its mirror."""
    rollout = read_rollout(name, alias, uow_factory=ctx.uow_factory)
    return AliasPublic(model=name, alias=alias, version=rollout.primary, **dict(RolloutPublic.of(rollout)))


@router.put("/{name}/aliases/{alias}", response_model=AliasedVersionPublic)
def update_alias(name: str, alias: AliasName, body: AliasUpdate, ctx: ContextDep) -> AliasedVersionPublic:
    """Point an alias at a version, or split its requests between versions by weight, optionally with a mirror; every
    session is loaded and warmed before the alias moves."""
    versions = [(v.version, v.weight) for v in body.versions] if body.versions is not None else None
    rollout, fields = rollout_of(version=body.version, versions=versions, mirror=body.mirror)
    named = rollout_versions(name, rollout, fields=fields, uow_factory=ctx.uow_factory)
    for found in named:
        ctx.predictor.model(found)  # load and warm up now, so the first request through the alias is not slow
    set_rollout(name, alias, rollout, fields=fields, uow_factory=ctx.uow_factory)
    ctx.predictor.forget(name)
    primary = next(found for found in named if found.version == rollout.primary)
    aliases = model_aliases(name, uow_factory=ctx.uow_factory)[1]
    return AliasedVersionPublic(**dict(VersionPublic.of(primary, aliases)), rollout=RolloutPublic.of(rollout))


@router.delete("/{name}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
def remove_alias(name: str, alias: AliasName, ctx: ContextDep) -> Response:
    """Remove an alias; the version stays."""
    delete_alias(name, alias, uow_factory=ctx.uow_factory)
    ctx.predictor.forget(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
