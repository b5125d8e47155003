"""API keys on every route but health, docs and metrics: 401 without a valid key, 403 without the scope.

One table says what each route needs, so the whole policy reads in one place:
- `predict`: POST .../predict and .../infer (and the v2 metadata a Triton client reads first);
- `train`: submitting and cancelling jobs, uploading and deleting datasets, uploading ONNX versions;
- `admin`: moving aliases and changing a version's serving options; admin keys may do anything;
- `read`: every other GET.
Keys are looked up through a short-lived cache (`KILN_AUTH_CACHE_S`), so a revoked key stops
working within it and a predict does not pay a database round trip.
"""

from __future__ import annotations

import functools
import re

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import render_error
from services.registry.db import DATABASE_UNAVAILABLE, database_unavailable
from services.usecases.keys import KeyCache, allows

PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                    "/v2/health/live", "/v2/health/ready"})  # fmt: skip
_NAME = r"[^/]+"
# (methods, path pattern, scopes any one of which is enough); the first match wins, then GET/HEAD need `read`.
RULES: list[tuple[frozenset[str], re.Pattern[str], frozenset[str]]] = [
    (frozenset({"POST"}), re.compile(rf"^/v1/models/{_NAME}(/versions/{_NAME}|/aliases/{_NAME})?/predict$"), frozenset({"predict"})),
    (frozenset({"POST"}), re.compile(rf"^/v2/models/{_NAME}(/versions/{_NAME})?/infer$"), frozenset({"predict"})),
    (frozenset({"GET", "HEAD"}), re.compile(r"^/v2(/.*)?$"), frozenset({"predict", "read"})),
    (frozenset({"POST"}), re.compile(rf"^/v1/jobs(/{_NAME}/cancel)?/?$"), frozenset({"train"})),
    (frozenset({"POST", "DELETE"}), re.compile(rf"^/v1/datasets(/{_NAME})?/?$"), frozenset({"train"})),
    (frozenset({"POST"}), re.compile(rf"^/v1/models/{_NAME}/versions/?$"), frozenset({"train"})),
    (frozenset({"GET", "HEAD"}), re.compile(r"^/.*$"), frozenset({"read"})),
]


@functools.lru_cache(maxsize=4096)
def required_scopes(method: str, path: str) -> frozenset[str] | None:
    """The scopes one of which a request needs; None for public routes."""
    if path in PUBLIC:
        return None
    for methods, pattern, scopes in RULES:
        if method in methods and pattern.match(path):
            return scopes
    return frozenset({"admin"})


class AuthGate:
    def __init__(self, app: ASGIApp, keys: KeyCache, *, disabled: bool) -> None:
        self.app, self.keys, self.disabled = app, keys, disabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.disabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"][len(scope.get("root_path", "")) :] if scope.get("root_path") else scope["path"]
        needed = required_scopes(scope["method"], path)
        if needed is None:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        known, key = self.keys.fresh(token) if token else (True, None)
        if not known:
            try:
                key = await run_in_threadpool(self.keys.lookup, token)  # a query must not stall the event loop
            except DATABASE_UNAVAILABLE as exc:
                if not database_unavailable(exc):
                    raise
                await _refuse(
                    scope, receive, send, 503, "unavailable", "the registry database cannot be reached right now; try again shortly"
                )
                return
        if key is None:
            message = (
                "a valid API key is required: send 'Authorization: Bearer <key>' (make run prints one; kiln-admin create-key mints more)"
            )
            await _refuse(scope, receive, send, 401, "unauthorized", message)
        elif not any(allows(key, s) for s in needed):
            wanted = " or ".join(sorted(needed))
            await _refuse(scope, receive, send, 403, "forbidden", f"this key ({key.name}) lacks the {wanted!r} scope this route needs")
        else:
            scope["kiln.key"] = key.name
            await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str:
    header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
    kind, _, token = header.partition(" ")
    return token.strip() if kind.lower() == "bearer" else ""


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    headers = {"WWW-Authenticate": 'Bearer realm="kiln"'} if status == 401 else {"Retry-After": "2"} if status == 503 else None
    await render_error(scope, status, code, message, field="Authorization", headers=headers)(scope, receive, send)
