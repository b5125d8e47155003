"""One typed Settings object for every process; built by the entrypoints, never at import time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from services.spec.budget import Budget


def _half_of_memory_mb() -> int:
    """Half of this machine's physical memory, in MiB (the default training-memory budget)."""
    try:
        return max(1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**21)
    except (ValueError, OSError, AttributeError):
        return 8192


class Settings(BaseSettings):
    """Kiln's configuration, read from `KILN_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore")

    # Embedded defaults live under one folder so `make run` needs nothing installed.
    data_dir: Path = Path("var")
    database_url: str = ""  # default: sqlite:///<data_dir>/kiln.db
    broker_url: str = ""  # default: sqla+sqlite:///<data_dir>/broker.db
    # The SQLite broker's fallback poll: a publish wakes its consumers on this machine at once (worker/embedded_broker.py).
    # A Celery worker looks at least every 2 s whatever this says (its loop's own drain timeout).
    broker_poll_s: float = Field(default=2.0, ge=0.01, le=60)
    artifact_dir: Path | None = None  # default: <data_dir>/artifacts (with an S3 store: this host's cache of it)
    # s3://bucket/prefix keeps artifacts, weights, uploaded datasets and checkpoints in S3 (credentials from the
    # standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); empty: all of them on local disk.
    artifact_url: str = ""
    s3_endpoint_url: str = ""  # an S3 API other than AWS' (SeaweedFS, MinIO, Ceph): http://host:port
    artifact_cache_mb: int = Field(default=4096, ge=1)  # each process' local copies of S3 artifacts, by hash
    s3_part_mb: int = Field(default=16, ge=5, le=5120)  # files larger than this are uploaded in parts of this size
    examples_dir: Path = Path("examples")  # the job specs the web UI offers to start from

    # API keys are required on every route but health, docs and metrics. Turning that off is for a
    # machine of your own only; the API says so loudly at start.
    auth_disabled: bool = False
    auth_cache_s: float = Field(default=5.0, ge=0.0)  # how long a revoked key may still work on a replica
    metrics_port: int = Field(default=0, ge=0, le=65535)  # serve the API's /metrics here instead (0: on the API port)

    host: str = "127.0.0.1"
    api_workers: int = Field(default=1, ge=1)  # `python -m api` processes
    worker_metrics_port: int = Field(default=9101, ge=0, le=65535)  # the worker's /metrics; 0: none
    log_format: Literal["text", "json"] = "text"
    events_poll_s: float = Field(default=0.25, gt=0)  # how often a job's event stream reads its progress
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # SQLite waits this long for a lock instead of failing at once (API and worker share the file).
    sqlite_busy_timeout_ms: int = 10_000

    # Prepended to the broker's queue names, so deployments (or test sessions) can share one broker.
    queue_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$", max_length=64)

    # Worker: prefork children on a CPU host; one per GPU on a GPU host.
    worker_concurrency: int = Field(default=1, ge=1)
    torch_threads: int = Field(default=0, ge=0)  # 0: cores divided by concurrency
    # A GPU worker counts as present while its heartbeat is younger than this.
    worker_heartbeat_s: float = 15.0
    worker_stale_after_s: float = 60.0

    # A job's time budget, in rising order (checked below): Celery raises SoftTimeLimitExceeded in the task,
    # then kills it; the broker redelivers an unacknowledged message only after its visibility timeout;
    # the job's lease outlives all three, so a live worker is never mistaken for a dead one.
    job_soft_time_limit_s: int = Field(default=6 * 3600, ge=1)
    job_time_limit_s: int = Field(default=6 * 3600 + 300, ge=1)
    broker_visibility_timeout_s: int = Field(default=6 * 3600 + 900, ge=1)
    job_lease_s: int = Field(default=6 * 3600 + 1800, ge=1)

    # Crash safety (see services/usecases/sweeper.py): a running job's worker writes a heartbeat every
    # job_heartbeat_s; one silent for job_stale_after_s is taken back and sent again, up to max_attempts
    # attempts in all. A queued job whose queue is empty and whose message went out more than
    # redispatch_after_s ago lost its message (a broker restart) and is sent again.
    max_attempts: int = Field(default=3, ge=1)
    job_heartbeat_s: float = Field(default=5.0, gt=0)
    job_stale_after_s: float = Field(default=60.0, gt=0)
    redispatch_after_s: float = Field(default=60.0, gt=0)
    sweep_interval_s: float = Field(default=10.0, gt=0)
    checkpoint_dir: Path | None = None  # default: <data_dir>/checkpoints

    # ONNX must agree with PyTorch on held-out rows: |onnx - torch| <= abs + rel * |torch| per element.
    parity_max_abs_diff: float = Field(default=1e-4, gt=0)
    parity_rtol: float = Field(default=1e-4, ge=0)
    parity_rows: int = Field(default=256, ge=1)

    dataset_dir: Path | None = None  # default: <data_dir>/datasets
    max_upload_mb: int = Field(default=1024, ge=1)
    max_body_mb: int = Field(default=64, ge=1)  # every other request body (413 above it)
    max_zip_uncompressed_mb: int = Field(default=4096, ge=1)  # what an image or NPZ archive may unpack to
    max_zip_files: int = Field(default=100_000, ge=1)
    # Uploaded arrays larger than this are streamed from disk in batches instead of loaded whole.
    max_in_memory_dataset_mb: int = Field(default=1024, ge=1)

    max_loaded_models: int = Field(default=16, ge=1)
    # Dynamic batching defaults (each version may override them): rows per run, and how long a
    # queued request may wait for the batch to fill. A request that finds its model idle never waits.
    max_batch_size: int = Field(default=64, ge=1)
    max_queue_delay_ms: float = Field(default=2.0, ge=0.0)
    resolve_cache_s: float = Field(default=1.0, ge=0.0)  # how stale an alias may be on this replica
    max_model_mb: int = Field(default=512, ge=1)  # uploaded ONNX files
    readiness_timeout_s: float = 2.0
    # Overload: a version whose batcher already holds this many rows answers 503 with Retry-After.
    max_queued_rows: int = Field(default=4096, ge=1)
    onnx_load_timeout_s: float = Field(default=30.0, gt=0)  # proving an uploaded ONNX file servable

    # Budgets checked at submission and again by the worker before it allocates anything.
    max_parameters: int = Field(default=100_000_000, ge=1)
    # Weights, gradients, optimizer state and one batch's activations; default: half of this machine's memory.
    max_training_memory_mb: int = Field(default_factory=lambda: _half_of_memory_mb(), ge=1)
    # Processes one job may train with (its `distributed.processes`); default: this machine's CPUs. Set it to the GPU
    # count of the GPU hosts, on the API too: the API checks it at submission, each worker again before it starts.
    max_training_processes: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)

    @model_validator(mode="after")
    def _time_limits_rise(self) -> Settings:
        limits = [self.job_soft_time_limit_s, self.job_time_limit_s, self.broker_visibility_timeout_s, self.job_lease_s]
        if limits != sorted(set(limits)):
            raise ValueError(
                "need KILN_JOB_SOFT_TIME_LIMIT_S < KILN_JOB_TIME_LIMIT_S < KILN_BROKER_VISIBILITY_TIMEOUT_S < KILN_JOB_LEASE_S, "
                f"got {limits}"
            )
        if self.job_stale_after_s < 3 * self.job_heartbeat_s:  # one late beat must not look like a dead worker
            raise ValueError(
                f"need KILN_JOB_STALE_AFTER_S >= 3 x KILN_JOB_HEARTBEAT_S, got {self.job_stale_after_s:g} and {self.job_heartbeat_s:g}"
            )
        return self

    @model_validator(mode="after")
    def _artifact_url_parses(self) -> Settings:
        if self.artifact_url:
            from services.registry.s3 import S3Location

            S3Location.parse(self.artifact_url)
        return self

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        data_dir = self.data_dir.resolve()
        self.data_dir = data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{data_dir / 'kiln.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{data_dir / 'broker.db'}"
        if self.artifact_dir is None:
            self.artifact_dir = data_dir / "artifacts"
        self.artifact_dir = self.artifact_dir.resolve()
        self.dataset_dir = (self.dataset_dir or data_dir / "datasets").resolve()
        self.checkpoint_dir = (self.checkpoint_dir or data_dir / "checkpoints").resolve()
        return self

    @property
    def artifacts(self) -> Path:
        """The artifact root, always set after validation."""
        assert self.artifact_dir is not None
        return self.artifact_dir

    @property
    def datasets(self) -> Path:
        """The dataset store's root, always set after validation."""
        assert self.dataset_dir is not None
        return self.dataset_dir

    @property
    def checkpoints(self) -> Path:
        """Where running jobs keep their last epoch's checkpoint, always set after validation."""
        assert self.checkpoint_dir is not None
        return self.checkpoint_dir

    def budget(self) -> Budget:
        """The most one job may ask for, as these settings have it: checked at submission and by the worker."""
        from services.spec.budget import Budget

        return Budget(max_parameters=self.max_parameters, max_training_memory_mb=self.max_training_memory_mb,
                      max_training_processes=self.max_training_processes)  # fmt: skip

    def ensure_dirs(self) -> None:
        """Create the local folders the embedded defaults write to."""
        for folder in (self.data_dir, self.artifacts, self.datasets, self.checkpoints):
            folder.mkdir(parents=True, exist_ok=True)
