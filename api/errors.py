"""The one place domain errors become HTTP responses: `{"error": {"code", "message", "field", "details"}}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.errors import Conflict, InvalidDataset, InvalidInput, InvalidSpec, KilnError, NotFound, PayloadTooLarge, Unavailable
from services.registry.db import DATABASE_UNAVAILABLE, database_unavailable

log = logging.getLogger(__name__)
_STATUS: dict[type[KilnError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidSpec: 422,
    InvalidInput: 422,
    InvalidDataset: 422,
    PayloadTooLarge: 413,
    Unavailable: 503,
}


def error_body(code: str, message: str, *, field: str | None = None, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, "details": details or []}}


def format_loc(loc: tuple[Any, ...]) -> str:
    """`("body", "model", "layers", 1, "Dense", "units")` -> `model.layers[1].units`."""
    parts: list[str] = []
    previous: Any = None
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif isinstance(previous, int) and part[:1].isupper():
            pass  # the layer type pydantic adds after a list index of a tagged union
        else:
            parts.append(("." if parts else "") + str(part))
        previous = part
    return "".join(parts) or "body"


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


async def _on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    details = _validation_details(exc)
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return JSONResponse(
        error_body("invalid_request", message, field=details[0]["field"] if details else None, details=details), status_code=422
    )


def status_for(exc: KilnError) -> int:
    return next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)


def kiln_error_response(exc: KilnError) -> JSONResponse:
    status = status_for(exc)
    details = [{"field": exc.field, "message": exc.message}] if exc.field else []
    return JSONResponse(error_body(exc.code, exc.message, field=exc.field, details=details), status_code=status)


def http_error_response(exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _on_kiln_error(_: Request, exc: KilnError) -> JSONResponse:
    return kiln_error_response(exc)


async def _on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return http_error_response(exc)


def database_error_response(exc: Exception) -> JSONResponse:
    """A registry that cannot be reached (restarting, failing over) is a 503 to retry; any other database error a 500."""
    if not database_unavailable(exc):
        log.error("registry database error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "the registry database failed this request"), status_code=500)
    log.warning("registry database unavailable: %s", type(exc).__name__)
    body = error_body("unavailable", "the registry database cannot be reached right now; try again shortly")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})


async def _on_database_error(_: Request, exc: Exception) -> JSONResponse:
    return database_error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(KilnError, _on_kiln_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    for unreachable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unreachable, _on_database_error)
