"""Request metrics as plain ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.metrics import ApiMetrics


class RequestMetricsMiddleware:
    """Counts requests and times them by route template, never by raw path (no user input in labels)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # labels() is a locked lookup; do it once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route: Any = scope.get("route")
            key = (scope["method"], getattr(route, "path", None) or "unmatched", status)
            children = self._children.get(key)
            if children is None:
                method, template = key[0], key[1]
                children = self._children[key] = (
                    self.metrics.http_requests.labels(method, template, str(status)),
                    self.metrics.http_duration.labels(method, template),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
