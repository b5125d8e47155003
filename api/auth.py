"""API keys on every route but health, docs and metrics: 401 without a valid key, 403 without the scope.

The route table (api.routes) says what each route needs, so the whole policy reads in one place:
- `predict`: POST .../predict and .../infer (and the v2 metadata a Triton client reads first);
- `train`: submitting and cancelling jobs, uploading and deleting datasets, uploading ONNX versions;
- `admin`: moving aliases and changing a version's serving options; admin keys may do anything;
- `read`: every other GET.
Keys are looked up through a short-lived cache (`KILN_AUTH_CACHE_S`), so a revoked key stops
working within it and a predict does not pay a database round trip.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import render_error
from api.routes import ADMIN, METADATA, READ, matching, on_path
from services.registry.db import DATABASE_UNAVAILABLE, database_unavailable
from services.usecases.keys import KeyCache, allows
from services.usecases.single_flight import SingleFlight


@functools.lru_cache(maxsize=8192)
def required_scopes(method: str, path: str) -> frozenset[str] | None:
    """The scopes one of which a request needs; None for public routes (the table in api.routes says which).

    A request no route serves (a 404 or 405 to come) is public on a public path, else needs `read` to GET
    (under /v2, `predict` does too, as for the protocol's other reads) and `admin` for anything else.
    """
    spec = matching(method, path)
    if spec is not None:
        return spec.scopes
    known = on_path(path)
    if known and all(s.scopes is None for s in known):
        return None
    if method in ("GET", "HEAD"):
        return METADATA if path == "/v2" or path.startswith("/v2/") else READ
    return ADMIN


class AuthGate:
    def __init__(self, app: ASGIApp, keys: KeyCache, *, disabled: bool) -> None:
        self.app, self.keys, self.disabled = app, keys, disabled
        # A key whose cache entry expires under load is asked for once, not once per request; on threads of their
        # own, so a flood of unknown tokens cannot hold up model loads and resolutions (the loop's default executor).
        self._lookups = SingleFlight(ThreadPoolExecutor(max_workers=8, thread_name_prefix="kiln-auth"))

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
                key = await self._lookups.run(token, self.keys.lookup, token)  # a query must not stall the event loop
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
            scope["kiln.scopes"] = key.scopes
            await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str:
    raw = scope.get("kiln.authorization")  # found by the request middleware's one pass over the headers
    if raw is None:
        raw = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    kind, _, token = raw.decode("latin-1").partition(" ")
    return token.strip() if kind.lower() == "bearer" else ""


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    headers = {"WWW-Authenticate": 'Bearer realm="kiln"'} if status == 401 else {"Retry-After": "2"} if status == 503 else None
    await render_error(scope, status, code, message, field="Authorization", headers=headers)(scope, receive, send)
