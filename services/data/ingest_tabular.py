"""CSV uploads: numeric feature columns with a target column, or a text column with a label column."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from services.data.ingest_common import DatasetError, Ingested, UploadOptions, encode_targets, save_npy

CHUNK_ROWS = 10_000


def _open(source: Path) -> tuple[TextIO, Iterator[list[str]], list[str]]:
    handle = open(source, newline="", encoding="utf-8-sig")
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        handle.close()
        raise DatasetError("the file is empty: expected a header row, then one row per sample") from None
    except (UnicodeDecodeError, csv.Error) as err:
        handle.close()
        raise DatasetError(f"not a UTF-8 CSV file: {err}") from None
    header = [name.strip() for name in header]
    return handle, reader, header


def _rows(reader: Iterator[list[str]], header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each non-empty row, refusing a row whose width differs from the header's."""
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DatasetError(f"row {line} has {len(row)} values; the header has {len(header)}", where=f"row {line}")
        yield line, row


def _column(header: list[str], name: str, role: str) -> int:
    if name not in header:
        raise DatasetError(f"no {role} column {name!r}: the columns are {', '.join(header)}", where=f"column {name!r}")
    return header.index(name)


def ingest_csv(source: Path, folder: Path, options: UploadOptions) -> Ingested:
    """A header row, numeric feature columns and the target column `options.target`."""
    if not options.target:
        raise DatasetError("name the target column: the form field 'target' is required for CSV uploads", where="target")
    handle, reader, header = _open(source)
    with handle:
        target = _column(header, options.target, "target")
        features = [i for i in range(len(header)) if i != target]
        if not features:
            raise DatasetError("the file has no feature columns besides the target")
        chunks, buffer, targets = [], [], []
        try:
            for line, row in _rows(reader, header):
                buffer.append([_feature(row[i], line, header[i]) for i in features])
                targets.append(row[target].strip())
                if len(buffer) == CHUNK_ROWS:
                    chunks.append(np.array(buffer, np.float32))
                    buffer = []
        except (UnicodeDecodeError, csv.Error) as err:
            raise DatasetError(f"not a UTF-8 CSV file: {err}") from None
    chunks.append(np.array(buffer, np.float32).reshape(-1, len(features)))
    y, task, names = encode_targets(targets, options.task, f"column {options.target!r}")
    x = np.concatenate(chunks)
    save_npy(folder, "x", x)
    save_npy(folder, "y", y)
    return Ingested(len(x), (len(features),), "float32", task, names)  # type: ignore[arg-type]


def _feature(cell: str, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DatasetError(f"row {line}, column {column!r}: {cell!r} is not a number", where=f"row {line}, column {column!r}") from None
    if not np.isfinite(value):
        raise DatasetError(f"row {line}, column {column!r}: {cell!r} is not a finite number", where=f"row {line}, column {column!r}")
    return value


def ingest_text_csv(source: Path, folder: Path, options: UploadOptions) -> Ingested:
    """A text column and a label column; tokenisation happens in the job, on the training split."""
    handle, reader, header = _open(source)
    label_name = options.target or "label"
    with handle:
        text, label = _column(header, options.text_column, "text"), _column(header, label_name, "label")
        texts, labels = [], []
        try:
            for _, row in _rows(reader, header):
                texts.append(row[text])
                labels.append(row[label].strip())
        except (UnicodeDecodeError, csv.Error) as err:
            raise DatasetError(f"not a UTF-8 CSV file: {err}") from None
    y, task, names = encode_targets(labels, options.task, f"column {label_name!r}")
    (folder / "texts.json").write_text(json.dumps(texts))
    save_npy(folder, "y", y)
    return Ingested(len(texts), (), "text", task, names)  # type: ignore[arg-type]
