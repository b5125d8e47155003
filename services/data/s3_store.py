"""Uploaded datasets in S3: the parsed files under `<prefix>datasets/<id>/`, a manifest written last.

The manifest (each file's name, size and sha256) is what makes a dataset exist in S3: a commit that fails half-way
leaves no manifest, and its files are removed. A worker materialises a dataset in its local folder with ranged reads,
each file checked against the manifest, so a dataset larger than memory streams from S3 to disk a chunk at a time,
and is then read in rows from disk as any local dataset is.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from pathlib import Path

from services.data.store import DatasetStore
from services.errors import KilnError
from services.registry.s3 import S3Objects, sha256_of

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


class S3DatasetStore(DatasetStore):
    """DatasetStore whose folders are local copies of what S3 holds; `root` is this host's cache of them."""

    def __init__(self, root: Path, objects: S3Objects) -> None:
        super().__init__(root)
        self.objects = objects
        self._lock = threading.Lock()

    def _prefix(self, dataset_id: uuid.UUID) -> str:
        return self.objects.key("datasets", str(dataset_id)) + "/"

    def commit(self, staged: Path, dataset_id: uuid.UUID) -> Path:
        """Upload every file, then the manifest; the staged folder becomes this host's copy."""
        files = sorted(path for path in staged.rglob("*") if path.is_file())
        manifest = []
        try:
            for path in files:
                name = path.relative_to(staged).as_posix()
                sha256 = sha256_of(path)
                self.objects.put_file(path, self._prefix(dataset_id) + name, sha256=sha256, once=False)
                manifest.append({"name": name, "size": path.stat().st_size, "sha256": sha256})
            listing = staged.parent / f"{staged.name}.{MANIFEST}"
            listing.write_text(json.dumps({"files": manifest}))
            try:
                self.objects.put_file(listing, self._prefix(dataset_id) + MANIFEST, sha256=sha256_of(listing), once=False)
            finally:
                listing.unlink(missing_ok=True)
        except BaseException:
            try:
                self._forget(dataset_id)  # no manifest was written: what was uploaded is not a dataset yet
            except Exception:
                log.warning("dataset %s: its partial upload could not be removed from S3", dataset_id, exc_info=True)
            raise
        final = super().folder(dataset_id)  # this host's copy (self.folder would fetch it from S3)
        staged.rename(final)
        return final

    def folder(self, dataset_id: uuid.UUID) -> Path:
        """The local copy, fetched from S3 first if this host has none."""
        final = super().folder(dataset_id)
        with self._lock:
            if final.is_dir():
                return final
            listing = self.staging() / MANIFEST
            if not self.objects.fetch(self._prefix(dataset_id) + MANIFEST, listing):
                raise KilnError(f"dataset {dataset_id} has no files in the artifact store")
            staged = listing.parent
            try:
                for item in json.loads(listing.read_text())["files"]:
                    target = staged / item["name"]
                    if not target.resolve().is_relative_to(staged.resolve()):
                        raise KilnError(f"dataset {dataset_id}: its manifest names a file outside its folder")
                    if not self.objects.fetch(self._prefix(dataset_id) + item["name"], target, sha256=item["sha256"]):
                        raise KilnError(f"dataset {dataset_id}: {item['name']} is missing from the artifact store")
                listing.unlink()
                try:
                    staged.rename(final)
                except OSError:
                    if not final.is_dir():
                        raise
                    shutil.rmtree(staged, ignore_errors=True)  # another process on this host fetched it first
            except BaseException:
                shutil.rmtree(staged, ignore_errors=True)
                raise
        return final

    def remove(self, path_or_id: Path | uuid.UUID) -> None:
        """The local copy, and S3's when this is a dataset's folder (the manifest first, so it stops existing at once)."""
        dataset_id = path_or_id if isinstance(path_or_id, uuid.UUID) else _dataset_id(path_or_id, self.root)
        if dataset_id is not None:
            self._forget(dataset_id)
        local = DatasetStore.folder(self, path_or_id) if isinstance(path_or_id, uuid.UUID) else path_or_id
        shutil.rmtree(local, ignore_errors=True)  # never self.folder: it would fetch what was just removed

    def _forget(self, dataset_id: uuid.UUID) -> None:
        prefix = self._prefix(dataset_id)
        self.objects.delete(prefix + MANIFEST)
        self.objects.delete_prefix(prefix)


def _dataset_id(path: Path, root: Path) -> uuid.UUID | None:
    if path.resolve().parent != root:
        return None
    try:
        return uuid.UUID(path.name)
    except ValueError:
        return None
