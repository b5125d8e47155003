"""The Open Inference Protocol's tensors: JSON data (flat or nested) and the binary tensor extension."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from services.errors import InvalidInput

DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip
NAMES = {np.dtype(v).name: k for k, v in DATATYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"


def datatype(numpy_name: str) -> str:
    return NAMES.get(numpy_name, numpy_name.upper())


def parse_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The request's JSON header and its input tensors, from JSON data or the binary section."""
    split = int(header_length) if header_length and header_length.isdigit() else len(body)
    if header_length and (not header_length.isdigit() or split > len(body)):
        raise InvalidInput(f"{HEADER_LENGTH} must be a byte count within the body's {len(body)} bytes")
    try:
        header = orjson.loads(body[:split])
    except (orjson.JSONDecodeError, ValueError) as err:
        raise InvalidInput(f"the inference header is not valid JSON: {err}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("an inference request needs an 'inputs' list")
    binary, offset, tensors = memoryview(body)[split:], 0, {}
    for item in header["inputs"]:
        name, shape, kind = item.get("name"), item.get("shape"), item.get("datatype")
        if kind not in DATATYPES or not isinstance(shape, list):
            raise InvalidInput(f"input {name!r}: expected a shape list and a datatype among {', '.join(DATATYPES)}")
        dtype = np.dtype(DATATYPES[kind])
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidInput(f"input {name!r}: shape must list non-negative integers, got {shape}")
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            expected = int(np.prod(shape)) * dtype.itemsize
            if not isinstance(size, int) or size != expected:
                raise InvalidInput(f"input {name!r}: binary_data_size must be {expected} bytes for shape {shape} {kind}, got {size!r}")
            if offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size {size} runs past the end of the body")
            array = np.frombuffer(binary[offset : offset + size], dtype=dtype)
            offset += size
        else:
            array = _json_data(name, item.get("data"), dtype)
        try:
            tensors[name] = array.reshape(shape)
        except ValueError:
            raise InvalidInput(f"input {name!r}: {array.size} values do not fill shape {shape}") from None
    return header, tensors


def _json_data(name: str, data: Any, dtype: np.dtype) -> np.ndarray:
    try:
        return np.asarray(data, dtype=dtype).reshape(-1)
    except (ValueError, TypeError):
        raise InvalidInput(f"input {name!r}: 'data' must be a flat or nested list of {dtype.name} values") from None


def encode_response(header: dict[str, Any], outputs: dict[str, np.ndarray], request: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The response body, with requested outputs as binary after the JSON header (and its length in a header)."""
    wanted = {o["name"]: o for o in request.get("outputs") or [] if isinstance(o, dict) and "name" in o}
    default_binary = bool((request.get("parameters") or {}).get("binary_data_output", False))
    items, blobs = [], []
    for name, array in outputs.items():
        if wanted and name not in wanted:
            continue
        binary = (wanted.get(name, {}).get("parameters") or {}).get("binary_data", default_binary)
        item: dict[str, Any] = {"name": name, "datatype": datatype(array.dtype.name), "shape": list(array.shape)}
        if binary:
            blob = np.ascontiguousarray(array).tobytes()
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = array.reshape(-1).tolist()
        items.append(item)
    text = orjson.dumps(header | {"outputs": items})
    if not blobs:
        return text, {"Content-Type": "application/json"}
    return text + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(text))}
