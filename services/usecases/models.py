"""Reading the model registry."""

from __future__ import annotations

from services.errors import NotFound
from services.registry.entities import ModelSummary, ModelVersion
from services.registry.protocols import UowFactory


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


def model_aliases(name: str, *, uow_factory: UowFactory) -> tuple[ModelSummary, dict[str, int]]:
    """A model's summary and its aliases (alias -> version)."""
    with uow_factory() as uow:
        found = next((m for m in uow.models.summaries() if m.name == name), None)
        if found is None:
            raise NotFound(f"no model named '{name}'", field="name")
        return found, uow.models.aliases(name)
