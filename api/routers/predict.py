"""Kiln's JSON predict: `{"inputs": [...]}` -> `{"model", "version", "outputs", "labels"}`, by version, alias or default."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from api.deps import ContextDep
from api.schemas import PredictRequest, PredictResponse
from services.errors import InvalidInput
from services.registry.entities import ModelVersion
from services.usecases.predict import input_feeds, predicted_labels

router = APIRouter(prefix="/v1/models", tags=["predict"])
VersionNumber = Annotated[int, Path(ge=1)]
# The body is read raw and parsed once with the stdlib (faster than a pydantic model of a large nested list);
# the schema is still documented in OpenAPI.
OPENAPI = {"requestBody": {"content": {"application/json": {"schema": PredictRequest.model_json_schema()}}, "required": True}}


async def _predict(request: Request, ctx: ContextDep, version: ModelVersion) -> Response:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInput(f"the body is not valid JSON: {err}", field="body") from None
    if not isinstance(body, dict) or "inputs" not in body:
        raise InvalidInput('expected a JSON object {"inputs": [...]}', field="inputs")
    model = ctx.predictor.model(version)
    result = await ctx.predictor.infer(version, input_feeds(body["inputs"], version, model))
    outputs = result.outputs[0]
    ctx.metrics.observe_inference(version, result)
    payload = {"model": version.model_name, "version": version.version, "outputs": outputs.tolist(),
               "labels": predicted_labels(outputs, version.labels)}  # fmt: skip
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


@router.post("/{name}/predict", response_model=PredictResponse, openapi_extra=OPENAPI)
async def predict_default(name: str, request: Request, ctx: ContextDep) -> Response:
    """Predict with the version aliased `production`, else the latest."""
    return await _predict(request, ctx, ctx.predictor.resolve(name))


@router.post("/{name}/versions/{version}/predict", response_model=PredictResponse, openapi_extra=OPENAPI)
async def predict_version(name: str, version: VersionNumber, request: Request, ctx: ContextDep) -> Response:
    """Predict with one version."""
    return await _predict(request, ctx, ctx.predictor.resolve(name, version=version))


@router.post("/{name}/aliases/{alias}/predict", response_model=PredictResponse, openapi_extra=OPENAPI)
async def predict_alias(name: str, alias: str, request: Request, ctx: ContextDep) -> Response:
    """Predict with the version an alias points at."""
    return await _predict(request, ctx, ctx.predictor.resolve(name, alias=alias))
