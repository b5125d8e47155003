"""An autoencoder's anomaly detection: `{"inputs": [...], "threshold"?}` -> `{"scores", "threshold", "anomalies"}`."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from api.deps import ApiContext, context
from api.hotpath import read_inputs_body, served_version
from services.registry.entities import MAX_VERSION, ModelVersion
from services.usecases.detect import check_detects, detection, threshold_for
from services.usecases.predict import input_feeds
from services.usecases.rollouts import SERVED_VERSION, Target

router = APIRouter(prefix="/v1/models", tags=["predict"])
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]


class DetectRequest(BaseModel):
    inputs: list[Any] = Field(description="One row per sample, shaped like the autoencoder's input.")
    threshold: float | None = Field(default=None, ge=0, description="Overrides the threshold training stored.")


class DetectResponse(BaseModel):
    model: str
    version: int
    scores: list[float] = Field(description="Each row's mean squared reconstruction error.")
    threshold: float
    anomalies: list[bool] = Field(description="Whether each row's score is over the threshold.")


OPENAPI = {"requestBody": {"content": {"application/json": {"schema": DetectRequest.model_json_schema()}}, "required": True}}


async def _detect(request: Request, ctx: ApiContext, target: Target) -> Response:
    version = served_version(request, target)
    check_detects(version)
    response, inputs = await ctx.metrics.counting_failures(version, _detect_counted(request, ctx, version))
    ctx.mirror.copy(target.mirror, lambda mirror, model: input_feeds(inputs, mirror, model))  # once the answer is ready
    return response


async def _detect_counted(request: Request, ctx: ApiContext, version: ModelVersion) -> tuple[Response, Any]:
    body, _ = await read_inputs_body(request)
    threshold = threshold_for(version, body.get("threshold"))
    model = await ctx.predictor.model_async(version)
    feeds = input_feeds(body["inputs"], version, model)
    result = await ctx.predictor.infer(version, feeds)
    ctx.metrics.observe_inference(version, result)
    (rows,) = feeds.values()
    payload = detection(version, rows, result.outputs[0], threshold)
    return Response(orjson.dumps(payload), media_type="application/json", headers={SERVED_VERSION: str(version.version)}), body["inputs"]


@router.post("/{name}/detect", response_model=DetectResponse, openapi_extra=OPENAPI)
async def detect_default(name: str, request: Request) -> Response:
    """Score rows with the autoencoder aliased `production`, else the latest version."""
    ctx = context(request)
    return await _detect(request, ctx, await ctx.predictor.target_async(name))


@router.post("/{name}/versions/{version}/detect", response_model=DetectResponse, openapi_extra=OPENAPI)
async def detect_version(name: str, version: VersionNumber, request: Request) -> Response:
    """Score rows with one version of an autoencoder: its reconstruction error against the threshold."""
    ctx = context(request)
    return await _detect(request, ctx, await ctx.predictor.target_async(name, version=version))


@router.post("/{name}/aliases/{alias}/detect", response_model=DetectResponse, openapi_extra=OPENAPI)
async def detect_alias(name: str, alias: str, request: Request) -> Response:
    """Score rows with the autoencoder version an alias points at."""
    ctx = context(request)
    return await _detect(request, ctx, await ctx.predictor.target_async(name, alias=alias))
