"""Kiln's JSON predict: `{"inputs": [...]}` -> `{"model", "version", "outputs", "labels"}`, by version, alias or default."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response
from starlette.routing import Route

from api.deps import ApiContext, context
from api.hotpath import read_inputs_body, served_version
from api.schemas import PredictRequest, PredictResponse
from services.errors import InvalidInput
from services.registry.entities import MAX_VERSION, ModelVersion
from services.usecases.predict import input_feeds, only_numbers, output_index, predicted_labels
from services.usecases.rollouts import SERVED_VERSION, Target

router = APIRouter(prefix="/v1/models", tags=["predict"])
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]
# The body is read raw and parsed once with the stdlib (faster than a pydantic model of a large nested list);
# the schema is still documented in OpenAPI. The context is read directly rather than injected: on the
# hot path FastAPI's dependency resolution costs more than the model run.
OPENAPI = {"requestBody": {"content": {"application/json": {"schema": PredictRequest.model_json_schema()}}, "required": True}}


async def _predict(request: Request, ctx: ApiContext, target: Target) -> Response:
    version = served_version(request, target)
    response, inputs = await ctx.metrics.counting_failures(version, _predict_counted(request, ctx, version))
    ctx.mirror.copy(target.mirror, lambda mirror, model: input_feeds(inputs, mirror, model))  # once the answer is ready
    return response


async def _predict_counted(request: Request, ctx: ApiContext, version: ModelVersion) -> tuple[Response, Any]:
    """The answer, and the request's inputs for a mirror."""
    body, raw = await read_inputs_body(request)
    model = await ctx.predictor.model_async(version)
    index = output_index(model, body.get("output"))
    result = await ctx.predictor.infer(version, input_feeds(body["inputs"], version, model, numbers_only=only_numbers(raw)))
    outputs = result.outputs[index]
    ctx.metrics.observe_inference(version, result)
    payload = {"model": version.model_name, "version": version.version, "outputs": outputs,
               "labels": predicted_labels(outputs, version.labels) if index == 0 else None}  # fmt: skip
    response = Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                        headers={SERVED_VERSION: str(version.version)})  # fmt: skip
    return response, body["inputs"]


@router.post("/{name}/predict", response_model=PredictResponse, openapi_extra=OPENAPI)
async def predict_default(name: str, request: Request) -> Response:
    """Predict with the version aliased `production`, else the latest."""
    ctx = context(request)
    return await _predict(request, ctx, await ctx.predictor.target_async(name))


@router.post("/{name}/versions/{version}/predict", response_model=PredictResponse, openapi_extra=OPENAPI)
async def predict_version(name: str, version: VersionNumber, request: Request) -> Response:
    """Predict with one version."""
    ctx = context(request)
    return await _predict(request, ctx, await ctx.predictor.target_async(name, version=version))


@router.post("/{name}/aliases/{alias}/predict", response_model=PredictResponse, openapi_extra=OPENAPI)
async def predict_alias(name: str, alias: str, request: Request) -> Response:
    """Predict with the version an alias points at."""
    ctx = context(request)
    return await _predict(request, ctx, await ctx.predictor.target_async(name, alias=alias))


def _fast(handler: Callable[[Request, ApiContext, dict[str, Any]], Awaitable[Response]], path: str) -> Route:
    """A plain Starlette route, served by api.hotpath ahead of the FastAPI one of the same path (kept for the OpenAPI docs).

    FastAPI's parameter validation and dependency solving cost more than resolving, checking and
    running a small model; on this path it is done by hand instead.
    """

    async def endpoint(request: Request) -> Response:
        return await handler(request, context(request), request.path_params)

    return Route(path, endpoint, methods=["POST"])


async def _by_default(request: Request, ctx: ApiContext, params: dict[str, Any]) -> Response:
    return await _predict(request, ctx, await ctx.predictor.target_async(params["name"]))


async def _by_version(request: Request, ctx: ApiContext, params: dict[str, Any]) -> Response:
    if not 1 <= params["version"] <= MAX_VERSION:
        raise InvalidInput(f"version: expected a number from 1 to {MAX_VERSION}", field="version")
    return await _predict(request, ctx, await ctx.predictor.target_async(params["name"], version=params["version"]))


async def _by_alias(request: Request, ctx: ApiContext, params: dict[str, Any]) -> Response:
    return await _predict(request, ctx, await ctx.predictor.target_async(params["name"], alias=params["alias"]))


FAST_ROUTES = [
    _fast(_by_version, "/v1/models/{name}/versions/{version:int}/predict"),
    _fast(_by_alias, "/v1/models/{name}/aliases/{alias}/predict"),
    _fast(_by_default, "/v1/models/{name}/predict"),
]
