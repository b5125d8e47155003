"""Bring your own model: an uploaded ONNX file, checked before any session is made, then served like a trained one."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import uses_external_data

from services.errors import InvalidInput
from services.registry.artifacts import ArtifactStore
from services.registry.entities import ModelVersion, NewVersion
from services.serving.onnx_probe import probe_onnx, unknown_op
from services.usecases.datasets import ReceivedFile
from services.usecases.jobs import UowFactory
from services.usecases.models import get_version
from services.usecases.versions import discard_if_unreferenced, register_version

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Every initializer and constant tensor, subgraphs included."""
    found = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                found.append(attribute.t)
            for sub in [attribute.g, *attribute.graphs] if attribute.HasField("g") or attribute.graphs else []:
                found += _tensors(sub)
    return found


def check_onnx(path: Path) -> onnx.ModelProto:
    """Parse and check the file; refuse external data and malformed graphs before onnxruntime sees them."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as err:
        raise InvalidInput(f"not an ONNX model: {err}", field="file") from None
    if any(uses_external_data(t) for t in _tensors(model.graph)):
        raise InvalidInput("the model refers to external data files: save it with the weights inside the .onnx file", field="file")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        message = unknown_op(str(err)) or f"the ONNX graph is malformed: {str(err).splitlines()[0]}"
        raise InvalidInput(message, field="file") from None
    return model


def register_onnx(name: str, received: ReceivedFile, *, labels: list[str] | None, uow_factory: UowFactory,
                  store: ArtifactStore, load_timeout_s: float) -> ModelVersion:  # fmt: skip
    """Check, prove servable, store and register an uploaded ONNX file as the next version of `name`.

    Blocking (a child process loads and runs the model, for up to `load_timeout_s`): call it off the event loop.
    Nothing is stored before onnxruntime has run the model, so a refused file leaves nothing behind.
    """
    if not MODEL_NAME.match(name):
        raise InvalidInput("a model name is letters, digits, '.', '_' and '-', starting with a letter or digit", field="name")
    check_onnx(received.path)
    signature = probe_onnx(received.path, timeout_s=load_timeout_s)
    stored = store.put(received.path)
    new = NewVersion(
        model_name=name, job_id=None, artifact_sha256=stored.sha256, artifact_size=stored.size, signature=signature,
        metrics={}, spec={}, hyperparameters={}, dataset={"source": "upload", "filename": received.filename}, labels=labels,
    )  # fmt: skip
    try:
        version = register_version(new, uow_factory=uow_factory)
    except BaseException:
        discard_if_unreferenced(stored.sha256, uow_factory=uow_factory, store=store)
        raise
    return get_version(name, version, uow_factory=uow_factory)
