"""The FastAPI app factory: `uvicorn --factory api.main:create_app`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import AuthGate, required_scopes
from api.deps import ApiContext, CeleryDispatcher
from api.errors import install_error_handlers
from api.hotpath import HotRoutes
from api.job_watch import JobWatch
from api.middleware import RequestMiddleware
from api.routers import datasets, detect, generate, health, jobs, keys, models, predict, studies, ui, v2
from api.routes import hot_routes
from services.config import Settings
from services.logs import RequestLog, configure_logging
from services.metrics import ApiMetrics
from services.registry.changes import ChangeListener
from services.registry.unit_of_work import connect_registry
from services.serving.sessions import OnnxSessionCache
from services.storage import open_storage
from services.usecases.jobs import count_jobs_by_state
from services.usecases.keys import KeyCache
from services.usecases.mirror import Mirror
from services.usecases.serve import BatchingDefaults, Predictor
from worker.app import create_celery, queue_lengths

log = logging.getLogger("kiln.api")


def create_app(settings: Settings | None = None) -> KilnApp:
    settings = settings or Settings()
    configure_logging(level=settings.log_level, json_lines=settings.log_format == "json")
    settings.ensure_dirs()
    engine, uow_factory = connect_registry(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    celery = create_celery(settings)
    storage = open_storage(settings)
    store = storage.artifacts
    metrics = ApiMetrics(lambda: count_jobs_by_state(uow_factory=uow_factory), lambda: queue_lengths(celery))
    sessions = OnnxSessionCache(capacity=settings.max_loaded_models, path_for=store.path_for, on_size=metrics.models_loaded.set)
    # onnxruntime releases the GIL, so batched runs proceed on these threads while the event loop reads requests.
    executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="kiln-infer")
    predictor = Predictor(
        uow_factory=uow_factory, sessions=sessions, executor=executor, ttl_s=settings.resolve_cache_s,
        defaults=BatchingDefaults(settings.max_batch_size, settings.max_queue_delay_ms, max_queued_rows=settings.max_queued_rows),
    )  # fmt: skip
    context = ApiContext(
        settings=settings, engine=engine, uow_factory=uow_factory, celery=celery, dispatcher=CeleryDispatcher(celery),
        sessions=sessions, metrics=metrics, datasets=storage.datasets, store=store, predictor=predictor,
        mirror=Mirror(load=predictor.model, metrics=metrics),  # shadow traffic, on threads of its own
        jobs=JobWatch(),
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        context.jobs.bind(asyncio.get_running_loop())
        changes = ChangeListener(settings.database_url, context.jobs.changed).start()
        yield
        context.jobs.bind(None)
        await asyncio.to_thread(changes.close)  # a join: not on the event loop
        context.mirror.close()
        executor.shutdown(wait=False)
        engine.dispose()

    app = KilnApp(
        title="Kiln",
        version="0.1.0",
        summary="Train neural networks from a JSON spec and serve them as ONNX.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,  # /docs is api.routers.ui's, from Kiln's own assets; ReDoc would need a CDN
    )
    app.state.kiln = context
    install_error_handlers(app)
    # The hot routes first: routing tries routes in order.
    app.include_router(predict.router)
    app.include_router(detect.router)
    app.include_router(generate.router)
    app.include_router(v2.router)
    app.include_router(jobs.router)
    app.include_router(studies.router)
    app.include_router(datasets.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(keys.router)
    app.include_router(ui.router)
    # Outermost: the request middleware, then the prediction routes, then FastAPI's own stack.
    hot = HotRoutes(hot_routes(predict.FAST_ROUTES + v2.FAST_ROUTES), app=super(KilnApp, app).__call__, owner=app)
    if settings.auth_disabled:
        log.warning("AUTHENTICATION IS OFF (KILN_AUTH_DISABLED=true): anyone who can reach port %d can train, predict, read "
                    "and change aliases. Use this on your own machine only.", settings.port)  # fmt: skip
    gate = AuthGate(hot, KeyCache(uow_factory, ttl_s=settings.auth_cache_s), disabled=settings.auth_disabled)
    request_log = RequestLog(json_lines=settings.log_format == "json")
    app.front = RequestMiddleware(gate, metrics=metrics, max_body_bytes=settings.max_body_mb * 2**20, request_log=request_log)
    app.openapi = lambda: _with_bearer_auth(app)  # type: ignore[method-assign]
    return app


def _with_bearer_auth(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, saying from the route table which routes take a bearer API key, and with which scopes."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "A Kiln API key (kiln-admin create-key)."}
        }
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                scopes = required_scopes(method.upper(), path)  # a template matches its own table entry
                if scopes is not None:
                    operation["security"] = [{"apiKey": []}]
                    operation["x-kiln-scopes"] = sorted(scopes)  # any one is enough; admin keys may do anything
        app.openapi_schema = schema
    return app.openapi_schema


class KilnApp(FastAPI):
    """FastAPI, entered through `front` (see create_app and api.hotpath)."""

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)
