"""The Open Inference Protocol's tensors: JSON data (flat or nested) and the binary tensor extension."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from services.errors import InvalidInput
from services.serving.signature import Signature
from services.usecases.predict import non_number

DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip
NAMES = {np.dtype(v).name: k for k, v in DATATYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_RANK = 8


def datatype(numpy_name: str) -> str:
    return NAMES.get(numpy_name, numpy_name.upper())


def parse_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The request's JSON header and its input tensors, from JSON data or the binary section.

    Every part of the header is checked before use, so a malformed body of any shape is a 4xx naming the field.
    """
    split = int(header_length) if header_length and header_length.isdigit() else len(body)
    if header_length and (not header_length.isdigit() or split > len(body)):
        raise InvalidInput(f"{HEADER_LENGTH} must be a byte count within the body's {len(body)} bytes", field=HEADER_LENGTH)
    try:
        header = orjson.loads(body[:split])
    except (orjson.JSONDecodeError, ValueError) as err:
        raise InvalidInput(f"body: the inference header is not valid JSON: {err}", field="body") from None
    if not isinstance(header, dict):
        raise InvalidInput('body: expected a JSON object {"inputs": [...]}', field="body")
    _check_header(header)
    binary, offset, tensors = memoryview(body)[split:], 0, {}
    for index, item in enumerate(header["inputs"]):
        name, shape, dtype = item["name"], item["shape"], np.dtype(DATATYPES[item["datatype"]])
        count = math.prod(shape)
        size = (item.get("parameters") or {}).get("binary_data_size")
        where = f"inputs[{index}]"
        if size is not None:
            expected = count * dtype.itemsize
            if type(size) is not int or size != expected:
                raise InvalidInput(f"{where}.parameters.binary_data_size: expected {expected} bytes for shape {shape} "
                                   f"{item['datatype']} of input {name!r}, got {size!r}",
                                   field=f"{where}.parameters.binary_data_size")  # fmt: skip
            if offset + size > len(binary):
                raise InvalidInput(f"{where}.parameters.binary_data_size: input {name!r}'s {size} bytes run past the end of the body",
                                   field=f"inputs[{index}].parameters.binary_data_size")  # fmt: skip
            array = np.frombuffer(binary[offset : offset + size], dtype=dtype)
            offset += size
        else:
            if count > len(body):  # every JSON value takes at least one byte: such a shape cannot be filled
                raise InvalidInput(f"{where}.shape: {shape} holds {count} values, more than the body can carry (input {name!r})",
                                   field=f"inputs[{index}].shape")  # fmt: skip
            array = _json_data(name, item.get("data"), dtype, field=f"inputs[{index}].data")
        if array.size != count:
            raise InvalidInput(
                f"{where}.data: {array.size} values do not fill shape {shape} (input {name!r})", field=f"inputs[{index}].data"
            )
        tensors[name] = array.reshape(shape)
    if offset != len(binary):  # Triton refuses extra input data too: it is a client's miscount, not padding
        raise InvalidInput(f"{HEADER_LENGTH}: {len(binary) - offset} bytes after the header belong to no input's binary_data_size",
                           field=HEADER_LENGTH)  # fmt: skip
    return header, tensors


def _check_header(header: dict[str, Any]) -> None:
    """Raise InvalidInput, naming the field, unless the header has the protocol's shape."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs: an inference request needs a non-empty list of tensor objects", field="inputs")
    _check_parameters(header, "parameters")
    if header.get("id") is not None and not isinstance(header["id"], str):  # it is echoed in the response
        raise InvalidInput(f"id: expected a string, got {_kind(header['id'])}", field="id")
    seen: set[str] = set()
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: expected an object {{name, shape, datatype, data}}, got {_kind(item)}", field=where)
        name, shape, kind = item.get("name"), item.get("shape"), item.get("datatype")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{where}.name: expected the input's name as a string, got {_kind(name)}", field=f"{where}.name")
        if name in seen:
            raise InvalidInput(f"{where}.name: input {name!r} is given twice", field=f"{where}.name")
        seen.add(name)
        if not isinstance(kind, str) or kind not in DATATYPES:
            raise InvalidInput(f"{where}.datatype: expected one of {', '.join(DATATYPES)}, got {kind!r}"[:300], field=f"{where}.datatype")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise InvalidInput(f"{where}.shape: expected a list of non-negative integers, got {shape!r}"[:300], field=f"{where}.shape")
        if len(shape) > MAX_RANK:
            raise InvalidInput(f"{where}.shape: at most {MAX_RANK} dimensions, got {len(shape)}", field=f"{where}.shape")
        _check_parameters(item, f"{where}.parameters")
    outputs = header.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise InvalidInput(f"outputs: expected a list of objects {{name, parameters}}, got {_kind(outputs)}", field="outputs")
    for index, item in enumerate(outputs):
        where = f"outputs[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: expected an object {{name, parameters}}, got {_kind(item)}", field=where)
        if not isinstance(item.get("name"), str):
            raise InvalidInput(
                f"{where}.name: expected the output's name as a string, got {_kind(item.get('name'))}", field=f"{where}.name"
            )
        _check_parameters(item, f"{where}.parameters")


def check_names(header: dict[str, Any], signature: Signature) -> None:
    """Raise InvalidInput, naming the field, for an input or a requested output the model does not have
    (onnxruntime would fail on the first; the second would be answered with nothing)."""
    for kind, specs in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        known = {spec.name for spec in specs}
        for index, item in enumerate(header.get(kind) or ()):
            if item["name"] not in known:
                names = ", ".join(repr(name) for name in sorted(known))
                field = f"{kind}[{index}].name"
                raise InvalidInput(f"{field}: this model has no {kind[:-1]} {item['name']!r}; its {kind} are {names}"[:300], field=field)


def _check_parameters(owner: dict[str, Any], field: str) -> None:
    parameters = owner.get("parameters")
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{field}: expected an object, got {_kind(parameters)}", field=field)
    for flag in ("binary_data", "binary_data_output"):  # a string "false" would read as true
        if flag in parameters and type(parameters[flag]) is not bool:
            raise InvalidInput(f"{field}.{flag}: expected true or false, got {_kind(parameters[flag])}", field=f"{field}.{flag}")


def _kind(value: Any) -> str:
    """A JSON value's kind, for error messages."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null"
    )


def _json_data(name: str, data: Any, dtype: np.dtype, *, field: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidInput(
            f"{field}: expected a flat or nested list of {dtype.name} values for input {name!r}, got {_kind(data)}", field=field
        )
    try:
        array = np.asarray(data, dtype=dtype).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{field}: expected a flat or nested list of {dtype.name} values for input {name!r}", field=field) from None
    found = non_number(data, integers=dtype.kind in "iu") if dtype.kind != "b" else None
    if found is not None:
        raise InvalidInput(f"{field}: input {name!r} holds {found} where {dtype.name} numbers are expected", field=field)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"{field}: input {name!r} must hold finite numbers (no NaN or Infinity)", field=field)
    return array


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
