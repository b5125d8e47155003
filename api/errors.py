"""The one place domain errors become HTTP responses: `{"error": {"code", "message", "field", "details"}}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from services.errors import (
    Conflict,
    InvalidDataset,
    InvalidInput,
    InvalidSpec,
    KilnError,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from services.registry.db import DATABASE_UNAVAILABLE, database_unavailable
from services.spec.job import format_loc

log = logging.getLogger(__name__)
_STATUS: dict[type[KilnError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidSpec: 422,
    InvalidInput: 422,
    InvalidDataset: 422,
    PayloadTooLarge: 413,
    NotAcceptable: 406,
    Unavailable: 503,
}


def error_body(code: str, message: str, *, field: str | None = None, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, "details": details or []}}


def render_error(
    scope: Scope,
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The one error renderer: the Open Inference Protocol's `{"error": "..."}` under /v2, Kiln's shape elsewhere.

    Both carry the request id (also in the X-Request-ID header). The protocol answers bad input with a 400.
    """
    request_id = scope.get("kiln.request_id")
    if scope.get("path", "").startswith("/v2"):
        body: dict[str, Any] = {"error": message} | ({"request_id": request_id} if request_id else {})
        return JSONResponse(body, status_code=400 if status == 422 else status, headers=headers)
    body = error_body(code, message, field=field, details=details)
    body["error"]["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, str]]:
    details = []
    for err in exc.errors():
        message = err["msg"]
        if err["type"] == "missing":
            message = "is required"
        elif err["type"] == "extra_forbidden":
            message = "is not a known argument"
        elif err["type"] == "json_invalid":
            message = f"is not valid JSON: {err.get('ctx', {}).get('error', 'decode error')}"
        details.append({"field": format_loc(tuple(err["loc"])), "message": message})
    return details


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    details = _validation_details(exc)
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return render_error(request.scope, 422, "invalid_request", message, field=details[0]["field"] if details else None, details=details)


def status_for(exc: KilnError) -> int:
    return next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)


def kiln_error_response(scope: Scope, exc: KilnError) -> Response:
    status = status_for(exc)
    details = [{"field": exc.field, "message": exc.message}] if exc.field else []
    headers = {"Retry-After": str(getattr(exc, "retry_after_s", 1))} if status == 503 else None
    return render_error(scope, status, exc.code, exc.message, field=exc.field, details=details, headers=headers)


def http_error_response(scope: Scope, exc: StarletteHTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
    return render_error(scope, exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


def internal_error_response(scope: Scope) -> Response:
    """What an unexpected exception becomes: a JSON 500 in the route's shape (the middleware logs it once)."""
    return render_error(scope, 500, "internal", "the server failed this request; it has been logged with its request id")


def database_error_response(scope: Scope, exc: Exception) -> Response:
    """A registry that cannot be reached (restarting, failing over) is a 503 to retry; any other database error a 500."""
    if not database_unavailable(exc):
        log.error("registry database error", exc_info=exc)
        return render_error(scope, 500, "internal", "the registry database failed this request")
    log.warning("registry database unavailable: %s", type(exc).__name__)
    message = "the registry database cannot be reached right now; try again shortly"
    return render_error(scope, 503, "unavailable", message, headers={"Retry-After": "2"})


def error_response(scope: Scope, exc: BaseException) -> Response:
    """Any exception as the response a client gets; None of them escapes as a bare 500."""
    if isinstance(exc, KilnError):
        return kiln_error_response(scope, exc)
    if isinstance(exc, StarletteHTTPException):
        return http_error_response(scope, exc)
    if isinstance(exc, DATABASE_UNAVAILABLE):
        return database_error_response(scope, exc)  # type: ignore[arg-type]
    raise exc


async def _on_error(request: Request, exc: Exception) -> Response:
    return error_response(request.scope, exc)


async def _on_unexpected(request: Request, _: Exception) -> Response:
    return internal_error_response(request.scope)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    for kind in (KilnError, StarletteHTTPException, *DATABASE_UNAVAILABLE):
        app.add_exception_handler(kind, _on_error)
    # Starlette's ServerErrorMiddleware renders this, then re-raises for the request middleware to log once.
    app.add_exception_handler(Exception, _on_unexpected)
