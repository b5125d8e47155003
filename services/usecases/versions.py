"""Registering versions (trained or uploaded), aliases, and resolving what a predict call names."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.exc import IntegrityError

from services.errors import KilnError, NotFound
from services.registry.artifacts import ArtifactStore
from services.registry.entities import JobState, ModelVersion, NewVersion
from services.registry.protocols import UnitOfWork, UowFactory

log = logging.getLogger(__name__)
REGISTER_ATTEMPTS = 5
DEFAULT_ALIAS = "production"


def register_version(new: NewVersion, *, uow_factory: UowFactory, job_attempt: int | None = None) -> int:
    """Register `new` as the next version; a job's version is registered with its success, in one transaction.

    Numbers are max + 1 under a unique constraint: a concurrent registration that takes the same
    number loses with IntegrityError and retries. A job registers at most one version, and only
    while `job_attempt` still holds it (an attempt the sweeper took back registers nothing).
    """
    for attempt in range(1, REGISTER_ATTEMPTS + 1):
        try:
            with uow_factory() as uow:
                version = uow.models.add_version(new)
                if new.job_id is not None and not uow.jobs.finish(
                    new.job_id, state=JobState.SUCCEEDED, version=version, attempt=job_attempt
                ):
                    raise KilnError("the job stopped running before its version could be registered")
                uow.commit()
                return version
        except IntegrityError:
            if new.job_id is not None:
                with uow_factory() as uow:
                    existing = uow.models.version_for_job(new.job_id)
                    job = uow.jobs.get(new.job_id, with_history=False)
                if existing is not None and job_attempt is not None and job is not None and job.attempt != job_attempt:
                    raise KilnError("another attempt of this job registered its version") from None  # this one was taken back
                if existing is not None:  # registered by an earlier delivery of this job
                    return existing.version
            log.warning("version number race for %s, retry %d", new.model_name, attempt)
            time.sleep(0.05 * attempt)
    raise KilnError(f"could not register a version of '{new.model_name}' after {REGISTER_ATTEMPTS} attempts")


def set_alias(name: str, alias: str, version: int, *, uow_factory: UowFactory) -> ModelVersion:
    """Point `alias` of model `name` at `version` (creating or moving it)."""
    with uow_factory() as uow:
        target = _version(uow, name, version)
        uow.models.set_alias(name, alias, version)
        uow.commit()
    return target


def delete_alias(name: str, alias: str, *, uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        if not uow.models.delete_alias(name, alias):
            raise NotFound(f"model '{name}' has no alias '{alias}'", field="alias")
        uow.commit()


def resolve(name: str, *, version: int | None = None, alias: str | None = None, uow_factory: UowFactory) -> ModelVersion:
    """The version a call names: a number, an alias, or neither (alias `production`, else the latest)."""
    with uow_factory() as uow:
        return resolve_in(uow, name, version=version, alias=alias)


def resolve_in(uow: UnitOfWork, name: str, *, version: int | None = None, alias: str | None = None) -> ModelVersion:
    """`resolve`, inside the caller's transaction."""
    if version is not None:
        return _version(uow, name, version)
    if alias is not None:
        number = uow.models.alias_version(name, alias)
        if number is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'" if uow.models.exists(name) else f"no model named '{name}'",
                           field="alias")  # fmt: skip
        return _version(uow, name, number)
    number = uow.models.alias_version(name, DEFAULT_ALIAS) or uow.models.latest_version(name)
    if number is None:
        raise NotFound(f"no model named '{name}'", field="name")
    return _version(uow, name, number)


def _version(uow: UnitOfWork, name: str, version: int) -> ModelVersion:
    """Version `version` of model `name`, or NotFound naming what is missing: the model, or just that version."""
    found = uow.models.get_version(name, version)
    if found is not None:
        return found
    if not uow.models.exists(name):
        raise NotFound(f"no model named '{name}'", field="name")
    raise NotFound(f"model '{name}' has no version {version}", field="version")


def discard_if_unreferenced(sha256: str, *, uow_factory: UowFactory, store: ArtifactStore) -> None:
    """Remove an artifact no version points to, so a failed registration leaves no orphan file."""
    with uow_factory() as uow:
        in_use = uow.models.artifact_in_use(sha256)
    if not in_use:
        store.delete(sha256)


def set_serving(name: str, version: int, serving: dict[str, float], *, uow_factory: UowFactory) -> ModelVersion:
    """Merge batching overrides into a version's serving options."""
    with uow_factory() as uow:
        found = _version(uow, name, version)
        uow.models.set_serving(name, version, (found.serving or {}) | serving)
        uow.commit()
        return _version(uow, name, version)


MAX_LINEAGE = 64  # ancestors walked at most (a cycle cannot form: a parent exists before its child)


def lineage(name: str, version: int, *, uow_factory: UowFactory) -> list[dict[str, Any]]:
    """The version and its ancestors back to the first: each with its job, its dataset (by hash) and what it took from its
    parent."""
    chain: list[dict[str, Any]] = []
    with uow_factory() as uow:
        current: ModelVersion | None = _version(uow, name, version)
        while current is not None and len(chain) < MAX_LINEAGE:
            data = current.dataset or {}
            chain.append({"model": current.model_name, "version": current.version, "job_id": current.job_id,
                          "task": current.task, "created_at": current.created_at,
                          "dataset": {"name": data.get("name"), "sha256": data.get("sha256")} if data else None,
                          "parent": current.parent})  # fmt: skip
            parent = current.parent
            current = uow.models.get_version(parent["model"], parent["version"]) if parent else None
            if parent and current is None:  # the parent's record is gone: say so rather than end as if it were the first
                chain.append({"model": parent["model"], "version": parent["version"], "missing": True})
    return chain
