"""Proves an uploaded ONNX file servable: onnxruntime loads it and runs it once, in a child process with a time limit.

A child, not a thread: a load that runs past the limit is killed rather than left spinning, and
a file that crashes onnxruntime takes down the child, not the API. Run as
`python -m services.serving.onnx_probe FILE`, it prints the signature (or onnxruntime's error) as JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import services
from services.errors import InvalidInput

# How onnxruntime names an op it cannot run, most specific first.
_UNKNOWN_OP = [
    re.compile(r"Fatal error: (?P<domain>[\w.]*):(?P<op>\w+)\(-?\d+\) is not a registered function/op"),
    re.compile(r"No Op registered for (?P<op>\w+) with domain_version of (?P<version>\d+)"),
    re.compile(r"Could not find an implementation for (?P<op>\w+)\((?P<version>\d+)\)"),
]
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def probe_onnx(path: Path, *, timeout_s: float) -> dict[str, Any]:
    """The signature onnxruntime reads from `path`, as `Signature.to_dict()`; InvalidInput naming what it cannot run."""
    root = str(Path(services.__file__).parents[1])  # so the child imports this checkout's services, installed or not
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "services.serving.onnx_probe", str(path)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        raise InvalidInput(
            f"onnxruntime did not load and run the model within KILN_ONNX_LOAD_TIMEOUT_S={timeout_s:g} s", field="file"
        ) from None
    try:
        answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise InvalidInput(f"onnxruntime crashed loading the model (exit status {done.returncode})", field="file") from None
    if "error" in answer:
        raise InvalidInput(explain(answer["stage"], answer["error"]), field="file")
    return answer["signature"]  # type: ignore[no-any-return]


def unknown_op(error: str) -> str | None:
    """The op an onnxruntime (or onnx checker) error says it cannot run, as a message naming it; None for other errors."""
    for pattern in _UNKNOWN_OP:
        if found := pattern.search(error):
            op, domain = found["op"], found.groupdict().get("domain") or "ai.onnx"
            version = f", opset {found['version']}" if found.groupdict().get("version") else ""
            return f"onnxruntime cannot run op '{op}' (domain '{domain}'{version}): replace it or export the model without it"
    return None


def explain(stage: str, error: str) -> str:
    """onnxruntime's error as a user can act on it: the op it cannot run, by name, when there is one."""
    if named := unknown_op(error):
        return named
    first_line = _ORT_PREFIX.sub("", error.strip().splitlines()[0] if error.strip() else "no message")
    if stage == "run":
        return f"onnxruntime loaded the model but could not run it on zeros, as serving does first: {first_line}"
    return f"onnxruntime cannot load the model: {first_line}"


def _zeros(signature: Any) -> dict[str, Any]:
    import numpy as np

    feeds = {}
    for tensor in signature.inputs:
        try:
            dtype = np.dtype(tensor.dtype)
        except TypeError:
            raise ValueError(f"input '{tensor.name}' is a {tensor.dtype}, which Kiln does not serve") from None
        feeds[tensor.name] = np.zeros([1 if d == -1 else d for d in tensor.shape], dtype=dtype)
    return feeds


def _main(path: str) -> dict[str, Any]:
    from services.serving.sessions import load_session
    from services.serving.signature import read_signature

    stage = "load"
    try:
        session = load_session(Path(path))
        signature = read_signature(session)
        stage = "run"
        session.run(None, _zeros(signature))
    except Exception as err:
        return {"stage": stage, "error": str(err)}
    return {"signature": signature.to_dict()}


if __name__ == "__main__":
    print(json.dumps(_main(sys.argv[1])))
