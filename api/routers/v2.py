"""The Open Inference Protocol v2 (KServe/Triton REST): health, metadata, readiness and infer, errors as {"error"}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException
from starlette.routing import Route

from api.deps import ContextDep, context
from api.errors import error_response
from api.hotpath import read_body, served_version
from api.schemas import V2_INFER_OPENAPI
from api.v2_codec import HEADER_LENGTH, check_names, datatype, encode_response, parse_request
from services.errors import KilnError, NotFound
from services.registry.entities import MAX_VERSION, ModelVersion
from services.usecases.models import list_versions
from services.usecases.rollouts import SERVED_VERSION, Target

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])


def _version_number(version: str) -> int:
    if not version.isdigit() or not 1 <= int(version) <= MAX_VERSION:
        raise NotFound(f"no version {version!r}: versions are numbers from 1")
    return int(version)


def _resolve(ctx: ContextDep, name: str, version: str | None) -> ModelVersion:
    """For the metadata routes, which FastAPI runs on a thread (plain `def`): a miss queries the registry there."""
    return ctx.predictor.resolve(name, version=_version_number(version) if version is not None else None)


async def _target_async(ctx: ContextDep, name: str, version: str | None) -> Target:
    return await ctx.predictor.target_async(name, version=_version_number(version) if version is not None else None)


@router.get("")
async def read_server() -> dict[str, Any]:
    """Server metadata."""
    return {"name": "kiln", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


NO_BODY: dict[int | str, dict[str, Any]] = {200: {"description": "Yes (an empty body, as the protocol says).", "content": None}}


@router.get("/health/live", response_class=Response, responses=NO_BODY)
async def read_live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready", response_class=Response, responses=NO_BODY | {503: {"description": "Not ready."}})
def read_ready(ctx: ContextDep) -> Response:
    """Ready while the registry answers."""
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"error": "the model registry cannot be reached"}, status_code=503)
    return Response(status_code=200)


def _metadata(ctx: ContextDep, version: ModelVersion, versions: list[str]) -> dict[str, Any]:
    signature = ctx.predictor.model(version).signature
    tensors = lambda specs: [{"name": t.name, "datatype": datatype(t.dtype), "shape": list(t.shape)} for t in specs]  # noqa: E731
    return {"name": version.model_name, "versions": versions, "platform": "onnxruntime_onnx",
            "inputs": tensors(signature.inputs), "outputs": tensors(signature.outputs)}  # fmt: skip


@router.get("/models/{name}")
def read_model(name: str, ctx: ContextDep) -> Response:
    """Metadata of the default version (alias `production`, else the latest), listing every version."""
    version = _resolve(ctx, name, None)
    versions = [str(v.version) for v in list_versions(name, uow_factory=ctx.uow_factory)]
    return JSONResponse(_metadata(ctx, version, versions))


@router.get("/models/{name}/versions/{version}")
def read_model_version(name: str, version: str, ctx: ContextDep) -> Response:
    found = _resolve(ctx, name, version)
    return JSONResponse(_metadata(ctx, found, [version]))


@router.get("/models/{name}/ready", response_class=Response, responses=NO_BODY)
def read_model_ready(name: str, ctx: ContextDep) -> Response:
    ctx.predictor.model(_resolve(ctx, name, None))  # loads the session if it is not loaded yet
    return Response(status_code=200)


@router.get("/models/{name}/versions/{version}/ready", response_class=Response, responses=NO_BODY)
def read_model_version_ready(name: str, version: str, ctx: ContextDep) -> Response:
    ctx.predictor.model(_resolve(ctx, name, version))
    return Response(status_code=200)


async def _infer(request: Request, ctx: ContextDep, target: Target) -> Response:
    """Infer with the version picked for this request (the default alias may split traffic), then copy it to a mirror."""
    found = served_version(request, target)
    response, feeds = await ctx.metrics.counting_failures(found, _infer_counted(request, ctx, found))
    ctx.mirror.copy(target.mirror, lambda mirror, model: feeds)  # once the answer is ready
    return response


async def _infer_counted(request: Request, ctx: ContextDep, found: ModelVersion) -> tuple[Response, dict[str, Any]]:
    header, feeds = parse_request(await read_body(request), request.headers.get(HEADER_LENGTH))
    model = await ctx.predictor.model_async(found)
    check_names(header, model.signature)
    result = await ctx.predictor.infer(found, feeds)
    ctx.metrics.observe_inference(found, result)
    names = [t.name for t in model.signature.outputs]
    reply = {"model_name": found.model_name, "model_version": str(found.version)} | ({"id": header["id"]} if "id" in header else {})
    body, headers = encode_response(reply, dict(zip(names, result.outputs, strict=True)), header)
    return Response(body, headers=headers | {SERVED_VERSION: reply["model_version"]}), feeds


@router.post("/models/{name}/infer", openapi_extra=V2_INFER_OPENAPI)
async def infer(name: str, request: Request, ctx: ContextDep) -> Response:
    """Infer with the default version: JSON tensors, or the binary tensor extension."""
    return await _infer(request, ctx, await _target_async(ctx, name, None))


@router.post("/models/{name}/versions/{version}/infer", openapi_extra=V2_INFER_OPENAPI)
async def infer_version(name: str, version: str, request: Request, ctx: ContextDep) -> Response:
    return await _infer(request, ctx, await _target_async(ctx, name, version))


def _fast(path: str, versioned: bool) -> Route:
    """A plain Starlette route served by api.hotpath ahead of the FastAPI one (kept for the docs); see api.routers.predict._fast."""

    async def endpoint(request: Request) -> Response:
        ctx, params = context(request), request.path_params
        try:
            target = await _target_async(ctx, params["name"], params["version"] if versioned else None)
            return await _infer(request, ctx, target)
        except (KilnError, HTTPException) as exc:
            return error_response(request.scope, exc)

    return Route(path, endpoint, methods=["POST"])


FAST_ROUTES = [_fast("/v2/models/{name}/versions/{version}/infer", True), _fast("/v2/models/{name}/infer", False)]
