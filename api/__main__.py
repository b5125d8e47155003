"""`python -m api`: the API under `KILN_API_WORKERS` uvicorn processes, with exact metrics across them."""

from __future__ import annotations

import os
import shutil

import uvicorn

from services.config import Settings


def serve_metrics_apart(settings: Settings) -> None:
    """/metrics on KILN_METRICS_PORT, from this parent process: every API process's files, and SQL and broker figures."""
    from services.metrics import serve_api_metrics
    from services.registry.unit_of_work import connect_registry
    from services.usecases.jobs import count_jobs_by_state
    from worker.app import create_celery, queue_lengths

    _, uow_factory = connect_registry(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    celery = create_celery(settings)
    serve_api_metrics(host=settings.host, port=settings.metrics_port,
                      count_jobs_by_state=lambda: count_jobs_by_state(uow_factory=uow_factory),
                      queue_lengths=lambda: queue_lengths(celery))  # fmt: skip


def main() -> None:
    settings = Settings()
    settings.ensure_dirs()
    if settings.api_workers > 1 or settings.metrics_port:
        # prometheus_client's multiprocess mode: every process writes here, a scrape sums the files. One process
        # serving its own /metrics needs none of it, and counts in memory (folded in at scrape time).
        # Wiped at start so totals begin at zero; set before any worker process imports prometheus_client.
        metrics_dir = settings.data_dir / "metrics" / f"api-{settings.port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if settings.metrics_port:
        serve_metrics_apart(settings)
    uvicorn.run("api.main:create_app", factory=True, host=settings.host, port=settings.port, workers=settings.api_workers,
                log_level=settings.log_level, access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
