"""Where a process keeps files: artifacts, uploaded datasets and checkpoints, on local disk or in S3.

Built from Settings by the entrypoints (api.main, worker.context): `KILN_ARTIFACT_URL=s3://bucket/prefix` puts all
three in S3, with local folders as this host's caches; otherwise they are the local folders themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.config import Settings
from services.data.store import DatasetStore
from services.registry.artifacts import ArtifactStore, LocalArtifactStore
from services.usecases.checkpoint_files import CheckpointCopies


@dataclass(frozen=True)
class Storage:
    artifacts: ArtifactStore
    datasets: DatasetStore
    checkpoints: CheckpointCopies | None  # None: checkpoints stay on local (or shared) disk


def open_storage(settings: Settings) -> Storage:
    if not settings.artifact_url:
        return Storage(LocalArtifactStore(settings.artifacts), DatasetStore(settings.datasets), None)
    from services.data.s3_store import S3DatasetStore
    from services.registry.s3 import S3Location, S3Objects, s3_client
    from services.registry.s3_artifacts import S3ArtifactStore, S3Checkpoints

    objects = S3Objects(s3_client(settings.s3_endpoint_url), S3Location.parse(settings.artifact_url),
                        part_bytes=settings.s3_part_mb << 20)  # fmt: skip
    return Storage(
        # a folder of its own: the local store's files beside it (from before S3) are never taken for cache entries
        S3ArtifactStore(objects, settings.artifacts / "s3-cache", cache_bytes=settings.artifact_cache_mb << 20),
        S3DatasetStore(settings.datasets, objects),
        S3Checkpoints(objects),
    )
