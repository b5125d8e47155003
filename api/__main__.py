"""`python -m api`: the API under `KILN_API_WORKERS` uvicorn processes, with exact metrics across them."""

from __future__ import annotations

import os
import shutil

import uvicorn

from services.config import Settings


def main() -> None:
    settings = Settings()
    settings.ensure_dirs()
    # prometheus_client's multiprocess mode: every process writes here, a scrape sums the files.
    # Wiped at start so totals begin at zero; set before any worker process imports prometheus_client.
    metrics_dir = settings.data_dir / "metrics" / f"api-{settings.port}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run("api.main:create_app", factory=True, host=settings.host, port=settings.port, workers=settings.api_workers,
                log_level=settings.log_level, access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
