"""NPZ and image-ZIP uploads, read without trusting them: no pickle, no paths from the archive, hard limits."""

from __future__ import annotations

import posixpath
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from services.data.arrays import read_npy_header
from services.data.ingest_common import DatasetError, Ingested, UploadOptions, ZipLimits, save_npy

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MAX_IMAGE_PIXELS = 50_000_000  # a decoded image larger than this is a decompression bomb


def _open_zip(source: Path, limits: ZipLimits) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError):
        raise DatasetError("not a readable ZIP archive") from None
    members = archive.infolist()
    if len(members) > limits.max_files:
        archive.close()
        raise DatasetError(f"the archive holds {len(members)} entries; the limit is {limits.max_files}")
    declared = sum(m.file_size for m in members)
    if declared > limits.max_uncompressed_bytes:
        archive.close()
        raise DatasetError(f"the archive unpacks to {declared} bytes; the limit is {limits.max_uncompressed_bytes}")
    return archive


def ingest_npz(source: Path, folder: Path, options: UploadOptions, limits: ZipLimits) -> Ingested:
    """Arrays `x` (any shape, numbers) and `y` (class ids or values), loaded with allow_pickle=False."""
    with _open_zip(source, limits) as archive:
        names = set(archive.namelist())
        for key in ("x", "y"):
            if f"{key}.npy" not in names:
                raise DatasetError(f"no array {key!r}: an NPZ upload holds arrays 'x' and 'y' (found {', '.join(sorted(names))})")
        shape_x, dtype_x = _copy_array(archive, "x", folder, limits)
        with archive.open("y.npy") as member:
            try:
                y = np.load(member, allow_pickle=False)
            except ValueError as err:
                raise DatasetError(f"array 'y' cannot be read without pickle: {err}", where="array 'y'") from None
    if len(y) != shape_x[0]:
        raise DatasetError(f"'x' has {shape_x[0]} rows but 'y' has {len(y)}", where="array 'y'")
    if len(shape_x) < 2 or shape_x[0] == 0:
        raise DatasetError(f"'x' must be (samples, features...), got shape {shape_x}", where="array 'x'")
    return _npz_targets(y, shape_x, dtype_x, folder, options)


def _copy_array(archive: zipfile.ZipFile, key: str, folder: Path, limits: ZipLimits) -> tuple[tuple[int, ...], np.dtype]:
    """Check the member's header, then stream it to disk unchanged (it may be larger than memory)."""
    where = f"array {key!r}"
    with archive.open(f"{key}.npy") as member:
        try:
            shape, fortran, dtype = read_npy_header(member)  # type: ignore[arg-type]
        except ValueError as err:
            raise DatasetError(f"{where} is not a valid .npy array: {err}", where=where) from None
    if dtype.hasobject:
        raise DatasetError(f"{where} holds Python objects (dtype object); save numbers instead", where=where)
    if dtype.kind not in "biuf":
        raise DatasetError(f"{where} must hold numbers, got dtype {dtype}", where=where)
    if fortran:
        raise DatasetError(f"{where} is Fortran-ordered; save it with numpy's default C order", where=where)
    with archive.open(f"{key}.npy") as member, open(folder / f"{key}.npy", "wb") as out:
        shutil.copyfileobj(member, out, length=1 << 20)  # zipfile stops at the declared size and checks the CRC
    if dtype.kind == "f":
        _check_finite(folder / f"{key}.npy", where)
    return tuple(shape), dtype


def _check_finite(path: Path, where: str) -> None:
    """Refuse NaN and Infinity, which would make every loss NaN; read in 64 MB slices through a file handle
    (not a memory map, whose pages would count against the API's memory), as the array may exceed memory."""
    with open(path, "rb") as source:
        _, _, dtype = read_npy_header(source)
        count = max(1, (64 << 20) // dtype.itemsize)
        while (chunk := np.fromfile(source, dtype=dtype, count=count)).size:
            if not np.isfinite(chunk).all():
                raise DatasetError(f"{where} holds NaN or Infinity; every value must be a finite number", where=where)


def _npz_targets(y: np.ndarray, shape_x: tuple[int, ...], dtype_x: np.dtype, folder: Path, options: UploadOptions) -> Ingested:
    task = options.task
    if task == "auto":
        task = "classification" if y.dtype.kind in "biu" and y.ndim == 1 else "regression"
    if task == "classification":
        if y.dtype.kind not in "biu" or y.ndim != 1 or y.min() < 0:
            raise DatasetError("classification needs 'y' as one class id (0, 1, 2 ...) per row", where="array 'y'")
        n_classes = int(y.max()) + 1
        save_npy(folder, "y", y.astype(np.int64))
        return Ingested(shape_x[0], shape_x[1:], str(dtype_x), "classification", [str(i) for i in range(n_classes)])
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"regression needs numeric 'y', got dtype {y.dtype}", where="array 'y'")
    targets = y.astype(np.float32).reshape(len(y), -1)
    if not np.isfinite(targets).all():
        raise DatasetError("array 'y' holds NaN or Infinity; every target must be a finite number", where="array 'y'")
    save_npy(folder, "y", targets)
    return Ingested(shape_x[0], shape_x[1:], str(dtype_x), "regression", n_targets=targets.shape[1])


def ingest_image_zip(source: Path, folder: Path, options: UploadOptions, limits: ZipLimits) -> Ingested:
    """One folder per class of PNG/JPEG images, decoded with Pillow and resized to `image_size`."""
    height, width = options.image_size
    with _open_zip(source, limits) as archive:
        files = _image_members(archive)
        classes = sorted({cls for cls, _ in files})
        if len(classes) < 2:
            raise DatasetError("an image ZIP holds one folder per class, and at least 2 classes")
        x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(len(files), height, width, 3))
        labels = np.empty(len(files), np.int64)
        index = {name: i for i, name in enumerate(classes)}
        for row, (cls, member) in enumerate(files):
            x[row] = _decode(archive, member, (width, height))
            labels[row] = index[cls]
        x.flush()
        del x
    save_npy(folder, "y", labels)
    return Ingested(len(files), (height, width, 3), "float32", "classification", classes)


def _image_members(archive: zipfile.ZipFile) -> list[tuple[str, zipfile.ZipInfo]]:
    """(class, member) for every image; the class is the folder just above the file."""
    found = []
    for member in archive.infolist():
        name = member.filename
        if member.is_dir() or name.startswith("__MACOSX/") or posixpath.basename(name).startswith("."):
            continue
        parts = posixpath.normpath(name).split("/")
        if name.startswith("/") or ".." in parts or "\\" in name:
            raise DatasetError(f"unsafe path in the archive: {name!r}", where=f"file {name!r}")
        if posixpath.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"{name!r} is not a PNG or JPEG file", where=f"file {name!r}")
        if len(parts) < 2:
            raise DatasetError(f"{name!r} is not inside a class folder: put each image in a folder named after its class",
                               where=f"file {name!r}")  # fmt: skip
        found.append((parts[-2], member))
    if not found:
        raise DatasetError("the archive holds no PNG or JPEG images")
    return found


def _decode(archive: zipfile.ZipFile, member: zipfile.ZipInfo, size: tuple[int, int]) -> np.ndarray:
    where = f"file {member.filename!r}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
            with archive.open(member) as fh, Image.open(fh) as image:
                if image.format not in ("PNG", "JPEG"):
                    raise DatasetError(f"{member.filename!r} is a {image.format} image; expected PNG or JPEG", where=where)
                rgb = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise DatasetError(f"{member.filename!r} is not a readable PNG or JPEG image ({type(err).__name__})", where=where) from None
    return np.asarray(rgb, np.float32) / 255.0  # (H, W, 3), values 0-1
