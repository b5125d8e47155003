"""Uploaded datasets on disk: one folder per dataset id, made in a staging folder and renamed into place."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path


class DatasetStore:
    """Folders under one root; names come from ids the server made, never from the upload."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def staging(self) -> Path:
        """A fresh folder on the store's filesystem for a file or a parser's output."""
        base = self.root / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=base))

    def folder(self, dataset_id: uuid.UUID) -> Path:
        return self.root / str(dataset_id)

    def commit(self, staged: Path, dataset_id: uuid.UUID) -> Path:
        final = self.folder(dataset_id)
        staged.rename(final)  # same filesystem: atomic
        return final

    def remove(self, path_or_id: Path | uuid.UUID) -> None:
        path = self.folder(path_or_id) if isinstance(path_or_id, uuid.UUID) else path_or_id
        shutil.rmtree(path, ignore_errors=True)
