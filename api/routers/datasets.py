"""`/v1/datasets`: upload datasets, list them with the built-ins, delete unused uploads."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from api.deps import ContextDep
from api.schemas import DatasetPublic, DatasetsPublic
from api.uploads import receive_upload
from services.data.catalogue import BUILTIN_DATASETS
from services.data.ingest_common import UploadOptions, ZipLimits
from services.errors import InvalidDataset, NotFound
from services.usecases.datasets import delete_dataset, get_dataset, list_uploads, parse_dataset_id, upload_dataset

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
FORMATS = {".csv": "csv", ".npz": "npz", ".zip": "image_zip"}


def upload_options(fields: dict[str, str], filename: str) -> UploadOptions:
    """Read options from the form: format (else from the file name), target, text_column, image_size, task."""
    fmt = fields.get("format") or ("text_csv" if "text_column" in fields else FORMATS.get(_suffix(filename), ""))
    if fmt not in ("csv", "text_csv", "npz", "image_zip"):
        raise InvalidDataset(f"unknown format {fmt or filename!r}: expected csv, text_csv, npz or image_zip", field="format")
    task = fields.get("task", "auto")
    if task not in ("auto", "classification", "regression"):
        raise InvalidDataset(f"task {task!r}: expected auto, classification or regression", field="task")
    size = fields.get("image_size", "64,64").replace("x", ",").split(",")
    try:
        height, width = (int(size[0]), int(size[-1]))
    except ValueError:
        height = width = 0
    if not (4 <= height <= 1024 and 4 <= width <= 1024):
        raise InvalidDataset("image_size: expected 'height,width' between 4 and 1024, e.g. '64,64'", field="image_size")
    return UploadOptions(format=fmt, target=fields.get("target") or None, text_column=fields.get("text_column", "text"),  # type: ignore[arg-type]
                         image_size=(height, width), task=task)  # type: ignore[arg-type]  # fmt: skip


def _suffix(filename: str) -> str:
    return "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic)
async def create_dataset(request: Request, ctx: ContextDep, response: Response) -> DatasetPublic:
    """Upload a CSV, text CSV, NPZ or image ZIP as multipart/form-data (`file` plus options)."""
    settings = ctx.settings
    target = ctx.datasets.staging() / "upload"
    limits = ZipLimits(settings.max_zip_files, settings.max_zip_uncompressed_mb * 2**20)
    try:
        received, fields = await receive_upload(request, target=target, max_bytes=settings.max_upload_mb * 2**20)
        options = upload_options(fields, received.filename)
        record, created = await run_in_threadpool(
            upload_dataset, received, options, name=fields.get("name"), uow_factory=ctx.uow_factory, store=ctx.datasets, limits=limits
        )
    finally:
        ctx.datasets.remove(target.parent)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/datasets/{record.id}"
    return DatasetPublic.of_upload(record)


@router.get("", response_model=DatasetsPublic)
def read_datasets(ctx: ContextDep) -> DatasetsPublic:
    """The built-in datasets, then every upload."""
    found = [DatasetPublic.of_builtin(info) for info in BUILTIN_DATASETS.values()]
    found += [DatasetPublic.of_upload(r) for r in list_uploads(uow_factory=ctx.uow_factory)]
    return DatasetsPublic(data=found, count=len(found))


@router.get("/{dataset_id}", response_model=DatasetPublic)
def read_dataset(dataset_id: str, ctx: ContextDep) -> DatasetPublic:
    """One dataset, by built-in name or upload id."""
    if dataset_id in BUILTIN_DATASETS:
        return DatasetPublic.of_builtin(BUILTIN_DATASETS[dataset_id])
    parsed = parse_dataset_id(dataset_id)
    if parsed is None:
        raise NotFound(f"no dataset {dataset_id!r}", field="dataset_id")
    return DatasetPublic.of_upload(get_dataset(parsed, uow_factory=ctx.uow_factory))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_dataset(dataset_id: str, ctx: ContextDep) -> Response:
    """Delete an upload; 409 while a registered version was trained on it."""
    delete_dataset(dataset_id, uow_factory=ctx.uow_factory, store=ctx.datasets)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
