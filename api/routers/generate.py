"""A GAN generator's samples: `{"n", "seed", "labels"}` -> `{"outputs": [...]}`, or one PNG grid with `Accept: image/png`."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import ApiContext, context
from api.hotpath import served_version
from services.registry.entities import MAX_VERSION, ModelVersion
from services.usecases.generate import MAX_SAMPLES, check_size, generation_of, latent_feeds, samples_png, wants_png
from services.usecases.rollouts import SERVED_VERSION, Target

router = APIRouter(prefix="/v1/models", tags=["predict"])
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=16, ge=1, le=MAX_SAMPLES, description="How many samples.")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1,
                             description="The same seed draws the same samples; none: a fresh one.")  # fmt: skip
    labels: list[int | str] | None = Field(default=None, max_length=MAX_SAMPLES,
                                           description="A conditional GAN's class per sample (index or name); "
                                           "none: each class in turn.")  # fmt: skip


class GenerateResponse(BaseModel):
    model: str
    version: int
    seed: int = Field(description="The seed z was drawn from: send it again for the same samples.")
    labels: list[int] | None = Field(description="The class of each sample (conditional GANs).")
    outputs: list[Any] = Field(description="One sample per entry, in the training data's layout.")


PNG = {200: {"content": {"application/json": {}, "image/png": {}}, "description": "The samples, as JSON or one PNG grid."}}


async def _generate(request: Request, body: GenerateRequest, ctx: ApiContext, target: Target) -> Response:
    version = served_version(request, target)
    generation = generation_of(version)
    response, feeds = await ctx.metrics.counting_failures(version, _generate_counted(request, body, ctx, version, generation))
    ctx.mirror.copy(target.mirror, lambda mirror, model: feeds)  # the same latent vectors, once the answer is ready
    return response


async def _generate_counted(request: Request, body: GenerateRequest, ctx: ApiContext, version: ModelVersion,
                            generation: dict[str, Any]) -> tuple[Response, dict[str, np.ndarray]]:  # fmt: skip
    check_size(generation, body.n)
    png = wants_png(request.headers.get("accept", ""), generation)  # before inference: a 406 costs nothing
    feeds, seed, labels = latent_feeds(generation, body.n, body.seed, body.labels)
    result = await ctx.predictor.infer(version, feeds)  # loads the model on a miss
    ctx.metrics.observe_inference(version, result)
    samples = result.outputs[0]
    if png:
        image = await run_in_threadpool(samples_png, generation, samples)
        return Response(image, media_type="image/png", headers={"X-Kiln-Seed": str(seed), SERVED_VERSION: str(version.version)}), feeds
    payload = {"model": version.model_name, "version": version.version, "seed": seed, "labels": labels}
    body_bytes = await run_in_threadpool(
        lambda: orjson.dumps(payload | {"outputs": np.ascontiguousarray(samples)}, option=orjson.OPT_SERIALIZE_NUMPY)
    )
    return Response(body_bytes, media_type="application/json", headers={SERVED_VERSION: str(version.version)}), feeds


@router.post("/{name}/generate", response_model=GenerateResponse, responses=PNG)  # type: ignore[arg-type]
async def generate_default(name: str, body: GenerateRequest, request: Request) -> Response:
    """Draw samples from the generator aliased `production`, else the latest version."""
    ctx = context(request)
    return await _generate(request, body, ctx, await ctx.predictor.target_async(name))


@router.post("/{name}/versions/{version}/generate", response_model=GenerateResponse, responses=PNG)  # type: ignore[arg-type]
async def generate_version(name: str, version: VersionNumber, body: GenerateRequest, request: Request) -> Response:
    """Draw samples from one version of a GAN's generator: z from `seed`, the class of each sample from `labels`."""
    ctx = context(request)
    return await _generate(request, body, ctx, await ctx.predictor.target_async(name, version=version))


@router.post("/{name}/aliases/{alias}/generate", response_model=GenerateResponse, responses=PNG)  # type: ignore[arg-type]
async def generate_alias(name: str, alias: str, body: GenerateRequest, request: Request) -> Response:
    """Draw samples from the generator version an alias points at."""
    ctx = context(request)
    return await _generate(request, body, ctx, await ctx.predictor.target_async(name, alias=alias))
