"""The floor of Python HTTP serving: a bare ASGI callable, no framework, one onnxruntime run per request.

Served by uvicorn with uvloop and httptools; the body is parsed and the answer written with orjson.
`KILN_BENCH_MODEL` is the ONNX file. Nothing is validated, counted or logged: whatever Kiln does beyond
this is what its figures pay for.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

session = ort.InferenceSession(os.environ["KILN_BENCH_MODEL"], providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
HEADERS = [(b"content-type", b"application/json")]


async def _body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """POST a JSON `{"inputs": [[...]]}` to any path: `{"outputs": [[...]]}`."""
    if scope["type"] != "http":  # lifespan: nothing to start or stop
        return
    if scope["method"] != "POST":  # a readiness probe
        await send({"type": "http.response.start", "status": 405, "headers": HEADERS})
        await send({"type": "http.response.body", "body": b'{"error": "POST only"}'})
        return
    x = np.asarray(orjson.loads(await _body(receive))["inputs"], dtype=np.float32)
    (outputs,) = session.run(None, {input_name: x})
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": orjson.dumps({"outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)})
