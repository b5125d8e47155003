"""Uploading, listing and deleting datasets."""

from __future__ import annotations

import hashlib
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from services.data.catalogue import BUILTIN_DATASETS
from services.data.ingest_common import DatasetError, Ingested, UploadOptions, ZipLimits
from services.data.ingest_files import ingest_image_zip, ingest_npz
from services.data.ingest_tabular import ingest_csv, ingest_text_csv
from services.data.store import DatasetStore
from services.errors import Conflict, InvalidDataset, NotFound
from services.registry.entities import DatasetRecord
from services.registry.protocols import UowFactory
from services.registry.tables import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedFile:
    """An upload already streamed to a staging file, with its hash and size."""

    path: Path
    filename: str
    sha256: str
    size: int


def _ingest(received: ReceivedFile, folder: Path, options: UploadOptions, limits: ZipLimits) -> Ingested:
    parsers: dict[str, Callable[[], Ingested]] = {
        "csv": lambda: ingest_csv(received.path, folder, options),
        "text_csv": lambda: ingest_text_csv(received.path, folder, options),
        "npz": lambda: ingest_npz(received.path, folder, options, limits),
        "image_zip": lambda: ingest_image_zip(received.path, folder, options, limits),
    }
    if received.size == 0:
        raise DatasetError("the file is empty")
    return parsers[options.format]()


def upload_dataset(received: ReceivedFile, options: UploadOptions, *, name: str | None, uow_factory: UowFactory,
                   store: DatasetStore, limits: ZipLimits) -> tuple[DatasetRecord, bool]:  # fmt: skip
    """Parse and record an upload; identical bytes read the same way return the existing dataset (created False)."""
    fingerprint = hashlib.sha256(f"{received.sha256}:{options.canonical()}".encode()).hexdigest()
    with uow_factory() as uow:
        existing = uow.datasets.by_fingerprint(fingerprint)
    if existing is not None:
        received.path.unlink(missing_ok=True)
        return existing, False
    staged = store.staging()
    try:
        ingested = _ingest(received, staged, options, limits)
        record = DatasetRecord(
            id=uuid.uuid4(), name=name or received.filename or options.format, format=options.format, fingerprint=fingerprint,
            sha256=received.sha256, size=received.size, n_samples=ingested.n_samples, feature_shape=ingested.feature_shape,
            dtype=ingested.dtype, target=ingested.target(), options=_options_json(options), created_at=utcnow(),
        )  # fmt: skip
        folder = store.commit(staged, record.id)
    except DatasetError as err:
        shutil.rmtree(staged, ignore_errors=True)
        raise InvalidDataset(err.message, field=err.where) from None
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        received.path.unlink(missing_ok=True)
    return _record(record, folder, uow_factory=uow_factory, store=store)


def _options_json(options: UploadOptions) -> dict[str, object]:
    return {"format": options.format, "target": options.target, "text_column": options.text_column,
            "image_size": list(options.image_size), "task": options.task}  # fmt: skip


def _record(record: DatasetRecord, folder: Path, *, uow_factory: UowFactory, store: DatasetStore) -> tuple[DatasetRecord, bool]:
    try:
        with uow_factory() as uow:
            uow.datasets.add(record)
            uow.commit()
        return record, True
    except IntegrityError:  # the same upload, recorded by a concurrent request first
        store.remove(folder)
        with uow_factory() as uow:
            winner = uow.datasets.by_fingerprint(record.fingerprint)
        if winner is None:
            raise
        return winner, False
    except BaseException:
        store.remove(folder)
        raise


def parse_dataset_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def get_dataset(dataset_id: uuid.UUID, *, uow_factory: UowFactory) -> DatasetRecord:
    with uow_factory() as uow:
        found = uow.datasets.get(dataset_id)
    if found is None:
        raise NotFound(f"no dataset with id {dataset_id}", field="dataset_id")
    return found


def list_uploads(*, uow_factory: UowFactory) -> list[DatasetRecord]:
    with uow_factory() as uow:
        return uow.datasets.all()


def delete_dataset(key: str, *, uow_factory: UowFactory, store: DatasetStore) -> None:
    """Delete an upload no registered version (and no unfinished job) was trained on."""
    if key in BUILTIN_DATASETS:
        raise Conflict(f"'{key}' is a built-in dataset and cannot be deleted", field="dataset_id")
    dataset_id = parse_dataset_id(key)
    if dataset_id is None:
        raise NotFound(f"no dataset with id {key}", field="dataset_id")
    with uow_factory() as uow:
        if uow.datasets.get(dataset_id) is None:
            raise NotFound(f"no dataset with id {dataset_id}", field="dataset_id")
        if used := uow.datasets.versions_using(dataset_id):
            raise Conflict(f"{used} registered model version(s) were trained on dataset {dataset_id}", field="dataset_id")
        if uow.jobs.any_active_using(str(dataset_id)):
            raise Conflict(f"a queued or running job uses dataset {dataset_id}", field="dataset_id")
        if uow.studies.any_running_using(str(dataset_id)):
            raise Conflict(f"a running study trains on dataset {dataset_id}: cancel it or let it end first", field="dataset_id")
        uow.datasets.delete(dataset_id)
        uow.commit()
    store.remove(dataset_id)


# The values an image's pixels take in the built-in image datasets (uploaded images are scaled to 0-1), so a client
# turning a PNG into a model's input scales it as training saw it, never guessing.
IMAGE_RANGES = {"digits": [0.0, 16.0], "digits28": [0.0, 1.0], "shapes": [0.0, 1.0]}


def input_range(name: str, dataset_id: uuid.UUID | None, uow_factory: UowFactory) -> list[float] | None:
    """The range of an image dataset's pixel values, as a version records it (None: not images)."""
    if dataset_id is None:
        return IMAGE_RANGES.get(name)
    with uow_factory() as uow:
        record = uow.datasets.get(dataset_id)
    return [0.0, 1.0] if record is not None and record.format == "image_zip" else None
