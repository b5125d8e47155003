"""Checkpoint files: one per attempt of a job (`<job>.<attempt>.pt`), so an attempt that was taken
back and wakes up writes only its own file, never the one the current attempt resumes from."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Protocol


class CheckpointCopies(Protocol):
    """Checkpoint files kept where every host reaches them (S3), beside the local ones."""

    def upload(self, path: Path) -> None: ...
    def fetch(self, path: Path) -> bool: ...
    def remove_job(self, job_id: uuid.UUID) -> None: ...


def attempt_file(root: Path, job_id: uuid.UUID, attempt: int) -> Path:
    return root / f"{job_id}.{int(attempt)}.pt"


def remove_job_files(root: Path, job_id: uuid.UUID) -> None:
    for path in root.glob(f"{job_id}.*.pt"):
        path.unlink(missing_ok=True)


def files_by_job(root: Path) -> dict[uuid.UUID, list[Path]]:
    """Every checkpoint file under `root`, by job (names that are not Kiln's are left alone)."""
    found: dict[uuid.UUID, list[Path]] = {}
    for path in root.glob("*.pt") if root.is_dir() else []:
        name, _, attempt = path.stem.partition(".")
        try:
            job_id = uuid.UUID(name)
        except ValueError:
            continue
        if attempt.isdigit():
            found.setdefault(job_id, []).append(path)
    return found
