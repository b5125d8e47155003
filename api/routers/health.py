"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from api.deps import ContextDep
from services.errors import NotFound

router = APIRouter(tags=["health"])


@router.get("/healthz")
def read_health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def read_readiness(ctx: ContextDep) -> JSONResponse:
    """Ready when both the database and the broker answer."""
    checks = {"database": _check_database(ctx), "broker": _check_broker(ctx)}
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503)


def _check_database(ctx: ContextDep) -> str:
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def _check_broker(ctx: ContextDep) -> str:
    try:
        with ctx.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=ctx.settings.readiness_timeout_s)
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


@router.get("/metrics", include_in_schema=False)
def read_metrics(ctx: ContextDep) -> Response:
    """Prometheus exposition (on KILN_METRICS_PORT instead, when that is set)."""
    if ctx.settings.metrics_port:
        raise NotFound(f"metrics are served on port {ctx.settings.metrics_port}")
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
