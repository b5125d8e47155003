"""Reading the model registry."""

from __future__ import annotations

from typing import Any

from services.errors import Conflict, InvalidSpec, NotFound
from services.registry.entities import ModelSummary, ModelVersion
from services.registry.protocols import UowFactory
from services.spec import ModelSpec
from services.spec.keras import model_to_keras


def list_models(*, uow_factory: UowFactory) -> list[ModelSummary]:
    with uow_factory() as uow:
        return uow.models.summaries()


def list_versions(name: str, *, uow_factory: UowFactory) -> list[ModelVersion]:
    with uow_factory() as uow:
        if not uow.models.exists(name):
            raise NotFound(f"no model named '{name}'", field="name")
        return uow.models.versions(name)


def get_version(name: str, version: int, *, uow_factory: UowFactory) -> ModelVersion:
    with uow_factory() as uow:
        found = uow.models.get_version(name, version)
        if found is None:
            if not uow.models.exists(name):
                raise NotFound(f"no model named '{name}'", field="name")
            raise NotFound(f"model '{name}' has no version {version}", field="version")
        return found


def keras_architecture(name: str, version: int, *, uow_factory: UowFactory) -> dict[str, Any]:
    """The version's architecture as Keras 3 `model.to_json()` writes it, for `keras.models.model_from_json`.

    The stored spec is read as the job read it (a version trained before layers had names gets the same
    automatic names its training did); a GAN's version gives its generator's. An uploaded ONNX file, or a layer Keras
    has no class for, is a Conflict.
    """
    found = get_version(name, version, uow_factory=uow_factory)
    if not found.spec:
        raise Conflict(f"version {version} of '{name}' was uploaded as ONNX: it has no Keras architecture", field="version")
    spec = found.spec["generator"] if found.task == "generator" else found.spec  # a GAN's version is its generator
    try:
        return model_to_keras(ModelSpec.model_validate(spec))
    except InvalidSpec as err:
        raise Conflict(f"version {version} of '{name}' cannot be written as Keras JSON: {err.message}", field="version") from None


def model_aliases(name: str, *, uow_factory: UowFactory) -> tuple[ModelSummary, dict[str, int]]:
    """A model's summary and its aliases (alias -> version)."""
    with uow_factory() as uow:
        found = next((m for m in uow.models.summaries() if m.name == name), None)
        if found is None:
            raise NotFound(f"no model named '{name}'", field="name")
        return found, uow.models.aliases(name)
