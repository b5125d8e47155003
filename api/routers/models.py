"""`/v1/models`: registered models, their versions, and predictions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import ContextDep
from api.schemas import ModelPublic, ModelsPublic, PredictRequest, PredictResponse, VersionPublic, VersionsPublic
from services.usecases.models import get_version, list_models, list_versions
from services.usecases.predict import predict

router = APIRouter(prefix="/v1/models", tags=["models"])
VersionNumber = Annotated[int, Path(ge=1)]


@router.get("", response_model=ModelsPublic)
def read_models(ctx: ContextDep) -> ModelsPublic:
    """Every registered model with its latest version."""
    found = list_models(uow_factory=ctx.uow_factory)
    return ModelsPublic(data=[ModelPublic.of(m) for m in found], count=len(found))


@router.get("/{name}/versions", response_model=VersionsPublic)
def read_versions(name: str, ctx: ContextDep) -> VersionsPublic:
    """A model's versions, oldest first."""
    found = list_versions(name, uow_factory=ctx.uow_factory)
    return VersionsPublic(data=[VersionPublic.of(v) for v in found], count=len(found))


@router.get("/{name}/versions/{version}", response_model=VersionPublic)
def read_version(name: str, version: VersionNumber, ctx: ContextDep) -> VersionPublic:
    """One version: signature, metrics, lineage."""
    return VersionPublic.of(get_version(name, version, uow_factory=ctx.uow_factory))


@router.post("/{name}/versions/{version}/predict", response_model=PredictResponse)
def predict_version(name: str, version: VersionNumber, body: PredictRequest, ctx: ContextDep) -> PredictResponse:
    """Outputs for a batch of rows from one version."""
    result = predict(name, version, body.inputs, uow_factory=ctx.uow_factory, sessions=ctx.sessions)
    return PredictResponse(model=result.model, version=result.version, outputs=result.outputs.tolist(), labels=result.labels)
