"""The prediction routes, dispatched ahead of the framework.

A one-row predict on a small model costs onnxruntime about 7 us; FastAPI's per-request telemetry
check, Starlette's error middlewares and its route scan cost more than that together. The routes
here (plain Starlette `Route`s, with the same paths as the FastAPI ones kept for the OpenAPI docs)
are matched first, by one suffix test and their own regexes, and their errors are rendered by the
same functions as everywhere else. Every other request goes to the FastAPI app untouched.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import DATABASE_UNAVAILABLE, error_response, internal_error_response
from services.errors import InvalidInput, KilnError
from services.registry.entities import ModelVersion
from services.usecases.rollouts import ROUTING_KEY, Target


async def read_inputs_body(request: Request) -> tuple[dict[str, Any], bytes]:
    """A predict or detect body, `{"inputs": ...}`, parsed once with orjson, and its raw bytes; InvalidInput otherwise."""
    raw = await read_body(request)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        if b"NaN" in raw or b"Infinity" in raw:
            raise InvalidInput("inputs must be finite numbers (no NaN or Infinity)", field="inputs") from None
        raise InvalidInput(f"the body is not valid JSON: {err}", field="body") from None
    if not isinstance(body, dict) or "inputs" not in body:
        raise InvalidInput('expected a JSON object {"inputs": [...]}', field="inputs")
    return body, raw


async def read_body(request: Request) -> bytes:
    """The whole body, straight from ASGI's receive: Request.body() goes through an async generator,
    which costs more than the rest of reading a one-row body."""
    message = await request.receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def served_version(request: Request, target: Target) -> ModelVersion:
    """The version that serves this request: by weight, sticky by its X-Kiln-Routing-Key (headers read only for a split)."""
    return target.pick(request.headers.get(ROUTING_KEY)) if len(target.versions) > 1 else target.primary


class HotRoutes:
    def __init__(self, routes: list[Route], *, app: ASGIApp, owner: object) -> None:
        self.routes, self.app, self.owner = routes, app, owner
        self.suffixes = tuple({"/" + route.path.rsplit("/", 1)[1] for route in routes})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith(self.suffixes):
            path = scope["path"][len(scope.get("root_path", "")) :] if scope.get("root_path") else scope["path"]
            for route in self.routes:
                match = route.path_regex.match(path)
                if match is None:
                    continue
                params = {key: route.param_convertors[key].convert(value) for key, value in match.groupdict().items()}
                scope["path_params"], scope["route"], scope["app"] = params, route, self.owner
                try:
                    response = await route.endpoint(Request(scope, receive))
                except (KilnError, HTTPException, *DATABASE_UNAVAILABLE) as exc:  # HTTPException: a chunked body over the limit
                    response = error_response(scope, exc)
                except Exception:
                    scope["kiln.failure"] = sys.exc_info()  # the request middleware logs it once, with its request id
                    response = internal_error_response(scope)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
