"""Per-request metrics, request ids and one log line, as plain ASGI middleware (no per-request task or body copy)."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import internal_error_response, render_error
from api.routes import BODY_METHODS, matching
from services.logs import RequestLog
from services.metrics import ApiMetrics

log = logging.getLogger("kiln.api")
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on (it turns other errors into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class RequestMiddleware:
    """Counts and times requests by route template (never by raw path), and logs one line per request.

    An `X-Request-ID` the caller sends is kept when it is a short token, else one is made; either
    way it is echoed in the response and written in the log line.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, max_body_bytes: int, request_log: RequestLog) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.request_log = request_log
        # Request ids: a random prefix per process and a counter (uuid4 costs a getrandom call per request).
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        given = declared = b""
        for key, value in scope["headers"]:  # one pass over the headers for all three
            if key == b"x-request-id":
                given = value
            elif key == b"content-length":
                declared = value
            elif key == b"authorization" and "kiln.authorization" not in scope:  # the first, as Starlette reads headers
                scope["kiln.authorization"] = value  # read by api.auth
        request_id = given.decode() if _REQUEST_ID.match(given) else f"{self._id_prefix}-{next(self._ids):x}"
        scope["kiln.request_id"] = request_id
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            capped = self._capped(scope)
            if capped and declared.isdigit() and int(declared) > self.max_body_bytes:  # refused before routing: no body read
                status = 413
                message = f"the request body is larger than {self.max_body_bytes} bytes"
                await render_error(scope, 413, "payload_too_large", message, field="body")(scope, receive, send_with_id)
            elif capped and not declared.isdigit():  # chunked: counted as it is read
                await self.app(scope, self._counted(receive), send_with_id)
            else:  # a declared length was checked, and the server stops reading at it
                await self.app(scope, receive, send_with_id)
        except Exception as exc:  # the safety net: logged once here, answered as JSON if nothing was sent yet
            log.error("unhandled error in %s %s (request %s)", scope["method"], scope["path"], request_id, exc_info=exc)
            if not started_response:
                await internal_error_response(scope)(scope, receive, send_with_id)
        finally:
            failure = scope.pop("kiln.failure", None)
            if failure is not None:  # caught by the hot path, which answered already
                log.error("unhandled error in %s %s (request %s)", scope["method"], scope["path"], request_id, exc_info=failure)
            self._record(scope, status, time.perf_counter() - started, request_id)

    def _capped(self, scope: Scope) -> bool:
        """Whether the body counts against `max_body_bytes`: every body but the uploads the route table exempts."""
        if scope["method"] not in BODY_METHODS:
            return False
        spec = matching(scope["method"], scope["path"])
        return spec is None or spec.capped

    def _counted(self, receive: Receive) -> Receive:
        """`receive`, stopping at `max_body_bytes` (uploads stream to disk and keep limits of their own)."""
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)
            return message

        return counting

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route: Any = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.metrics.observe_http(scope["method"], template, status, seconds)
        self.request_log.write(request_id=request_id, method=scope["method"], route=template, status=status, seconds=seconds)
