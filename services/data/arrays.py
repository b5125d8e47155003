"""Rows of an .npy file read on demand, for datasets larger than memory.

Rows are fetched with positioned reads rather than through a memory map: pages a process maps
count toward its resident set until the kernel reclaims them, so a mapped 4 GB file read once
per epoch would show as 4 GB of RSS. Positioned reads go through the page cache instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np


def read_npy_header(fh: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype of the .npy stream at `fh`, leaving it at the first data byte."""
    major, _ = np.lib.format.read_magic(fh)
    reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    return reader(fh, max_header_size=100_000)


class RowView:
    """Some rows (all by default) of a C-ordered .npy file; `read` returns them as an ndarray."""

    def __init__(self, path: Path, rows: np.ndarray | None = None) -> None:
        self.path = path
        with open(path, "rb") as fh:
            shape, fortran, dtype = read_npy_header(fh)
            self.offset = fh.tell()
        if fortran or dtype.hasobject:
            raise ValueError(f"{path.name}: only C-ordered arrays of plain numbers can be read in rows")
        self.file_shape: tuple[int, ...] = tuple(shape)
        self.dtype = dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.rows = np.arange(shape[0]) if rows is None else rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.file_shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, positions: np.ndarray) -> RowView:
        """A view of the rows at `positions` (indices into this view)."""
        return RowView(self.path, self.rows[positions]) if len(positions) else RowView(self.path, self.rows[:0])

    def read(self, positions: np.ndarray | slice) -> np.ndarray:
        """The rows at `positions`, read with one pread per contiguous run of file rows."""
        wanted = self.rows[positions]
        out = np.empty((len(wanted), *self.file_shape[1:]), self.dtype)
        buffer = out.reshape(len(wanted), -1).view(np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            start = 0
            while start < len(wanted):
                end = start + 1
                while end < len(wanted) and wanted[end] == wanted[end - 1] + 1:
                    end += 1
                view = memoryview(buffer[start:end].reshape(-1))  # type: ignore[arg-type]
                os.preadv(fd, [view], self.offset + int(wanted[start]) * self.row_bytes)
                start = end
        finally:
            os.close(fd)
        return out
