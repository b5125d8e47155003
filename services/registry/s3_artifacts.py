"""Artifacts and checkpoints in S3, each process keeping a bounded local cache of artifacts by hash.

An artifact's key is its sha256 (`<prefix>artifacts/ab/abcd….onnx`), written once, conditionally. A process that
reads one downloads it to its cache, checked against the hash, and serves every later load from there: the API
never waits on S3 for a version after its first load. The cache is bounded in bytes, least recently used first out.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

from services.registry.artifacts import StoredArtifact, check_sha256, temp_file_in
from services.registry.s3 import ArtifactCorrupt, S3Objects, sha256_of

log = logging.getLogger(__name__)


class S3ArtifactStore:
    """The ArtifactStore protocol on S3; `cache` is a local folder this process may fill up to `cache_bytes`."""

    def __init__(self, objects: S3Objects, cache: Path, *, cache_bytes: int) -> None:
        self.objects = objects
        self.cache = cache.resolve()
        self.cache_bytes = cache_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _key(self, sha256: str) -> str:
        return self.objects.key("artifacts", sha256[:2], f"{sha256}.onnx")

    def _cached(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.cache / sha256[:2] / sha256

    def temp_path(self, suffix: str = ".onnx") -> Path:
        return temp_file_in(self.cache, suffix)

    def put(self, temp_file: Path) -> StoredArtifact:
        """Upload a finished temp file under its hash, then keep it as the cache's copy (the temp file is consumed)."""
        sha256, size = sha256_of(temp_file), temp_file.stat().st_size
        self.objects.put_file(temp_file, self._key(sha256), sha256=sha256)
        cached = self._cached(sha256)
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp_file, cached)
        self._evict(keep=cached)
        return StoredArtifact(sha256, size)

    def path_for(self, sha256: str) -> Path:
        """The cached copy, downloaded and checked first if this process has none."""
        cached = self._cached(sha256)
        with self._lock_for(sha256):
            if cached.is_file():
                os.utime(cached)  # recently used
                return cached
            if not self.objects.fetch(self._key(sha256), cached, sha256=sha256):
                raise FileNotFoundError(f"artifact {sha256} is not in the store")
        log.info("artifact %s fetched from S3 (%d bytes)", sha256, cached.stat().st_size)
        self._evict(keep=cached)
        return cached

    def _lock_for(self, sha256: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sha256, threading.Lock())

    def exists(self, sha256: str) -> bool:
        return self._cached(sha256).is_file() or self.objects.head(self._key(sha256)) is not None

    def delete(self, sha256: str) -> None:
        self.objects.delete(self._key(sha256))
        self._cached(sha256).unlink(missing_ok=True)

    def read_bytes(self, sha256: str) -> bytes:
        data = self.path_for(sha256).read_bytes()
        if (found := _sha256_bytes(data)) != sha256:  # a cache file changed on disk since it was checked
            self._cached(sha256).unlink(missing_ok=True)
            raise ArtifactCorrupt(f"the cached copy of artifact {sha256} hashes to {found}; it was removed")
        return data

    def _evict(self, *, keep: Path) -> None:
        """Remove least recently used files until the cache fits its bound (never `keep`, just written or read).
        A file a session or a download still has open stays readable: unlinking does not take it away."""
        files = []
        for path in self.cache.glob("??/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.cache_bytes:
                return
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


class S3Checkpoints:
    """A copy in S3 of each checkpoint file, so an attempt resumed on another host finds it. Uploaded after the local
    file is complete and before the epoch is recorded in SQL, so SQL never runs ahead of it."""

    def __init__(self, objects: S3Objects) -> None:
        self.objects = objects

    def _key(self, path: Path) -> str:
        return self.objects.key("checkpoints", path.name)

    def upload(self, path: Path) -> None:
        self.objects.put_file(path, self._key(path), sha256=sha256_of(path), once=False)

    def fetch(self, path: Path) -> bool:
        """Download the copy of `path` when the local file is missing; False when S3 has none either."""
        return path.is_file() or self.objects.fetch(self._key(path), path)

    def remove_job(self, job_id: uuid.UUID) -> None:
        self.objects.delete_prefix(self.objects.key("checkpoints", f"{job_id}."))
