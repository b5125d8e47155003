"""Content-addressed artifacts (ONNX files, weights): an ArtifactStore, on local disk here or in S3 (services.registry.s3_artifacts).

The local store writes a temp file, fsyncs it and renames it under its sha256.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size: int


class ArtifactStore(Protocol):
    """Where versions' files live, by sha256. `path_for` is a local file with the artifact's bytes: the file itself on
    local disk, a checked copy in a bounded local cache for S3."""

    def temp_path(self, suffix: str = ".onnx") -> Path: ...
    def put(self, temp_file: Path) -> StoredArtifact: ...
    def path_for(self, sha256: str) -> Path: ...
    def exists(self, sha256: str) -> bool: ...
    def delete(self, sha256: str) -> None: ...
    def read_bytes(self, sha256: str) -> bytes: ...


def check_sha256(sha256: str) -> None:
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")


def temp_file_in(root: Path, suffix: str) -> Path:
    """A fresh file under `root/tmp`, on the same filesystem as the store, so the final rename is atomic."""
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=suffix, dir=tmp)
    os.close(fd)
    return Path(name)


class LocalArtifactStore:
    """Artifacts under one root folder; paths are derived from hashes, never from user input."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def temp_path(self, suffix: str = ".onnx") -> Path:
        return temp_file_in(self.root, suffix)

    def path_for(self, sha256: str) -> Path:
        check_sha256(sha256)
        path = (self.root / sha256[:2] / f"{sha256}.onnx").resolve()
        if not path.is_relative_to(self.root):
            raise ValueError("artifact path escapes the artifact root")
        return path

    def put(self, temp_file: Path) -> StoredArtifact:
        """Move a finished temp file into place under its hash (the temp file is consumed)."""
        digest = hashlib.sha256()
        with open(temp_file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            os.fsync(fh.fileno())
        sha256 = digest.hexdigest()
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        size = temp_file.stat().st_size
        os.replace(temp_file, final)
        _fsync_dir(final.parent)
        return StoredArtifact(sha256, size)

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def read_bytes(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
