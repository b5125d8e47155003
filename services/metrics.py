"""Every Prometheus metric Kiln exposes, in one place.

With several processes (uvicorn workers, Celery's prefork children) prometheus_client's
multiprocess mode keeps exact totals: each process writes its values to files in
PROMETHEUS_MULTIPROC_DIR, which the entrypoint wipes at start, and a scrape sums them. That
variable must be set before this module is first imported, so entrypoints import it late.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from services.errors import InvalidInput, Overloaded, PayloadTooLarge
from services.metric_tally import CountTally, HistogramTally, Tallies
from services.registry.entities import JobState, ModelVersion
from services.serving.batcher import BatchResult

T = TypeVar("T")

# Seconds; fine at the low end, where a predict on a small model lands.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GAN_FIGURES = ("d_loss", "g_loss", "d_x", "d_g_z")  # what a GAN job reports per epoch, as kiln_gan_last_figure


class JobsByStateCollector(Collector):
    """`kiln_training_jobs{state}`, read from SQL at scrape time so every API replica agrees."""

    def __init__(self, count_by_state: Callable[[], dict[str, int]]) -> None:
        self._count_by_state = count_by_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("kiln_training_jobs", "Training jobs by state.", labels=["state"])
        counts = self._count_by_state()
        for state in JobState:
            family.add_metric([state.value], counts.get(state.value, 0))
        yield family


class QueueLengthCollector(Collector):
    """`kiln_broker_queue_length{queue}`: messages waiting in the broker, asked at scrape time."""

    def __init__(self, queue_lengths: Callable[[], dict[str, int]]) -> None:
        self._queue_lengths = queue_lengths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("kiln_broker_queue_length", "Jobs waiting in the broker, by queue.", labels=["queue"])
        for queue, length in self._queue_lengths().items():
            family.add_metric([queue], length)
        yield family


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def exposition(registry: CollectorRegistry, scrape_time: list[Collector]) -> bytes:
    """The text exposition: this process's registry, or, in multiprocess mode, every process's files."""
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        for collector in scrape_time:
            registry.register(collector)
    return generate_latest(registry)


def study_trials_counter(registry: CollectorRegistry) -> Counter:
    """kiln_study_trials_total{outcome}: counted by whichever process settles a trial (the API on a cancel, else a worker)."""
    return Counter("kiln_study_trials", "Study trials that ended, by outcome: complete, pruned, failed or cancelled.", ["outcome"],
                   registry=registry)  # fmt: skip


class ApiMetrics:
    """The API's metrics, on a registry of their own so each app instance starts clean."""

    def __init__(self, count_jobs_by_state: Callable[[], dict[str, int]], queue_lengths: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        # Read at scrape time from SQL and the broker, so every replica reports the same.
        self.scrape_time: list[Collector] = [JobsByStateCollector(count_jobs_by_state), QueueLengthCollector(queue_lengths)]
        if not multiprocess():
            for collector in self.scrape_time:
                self.registry.register(collector)
        self.http_requests = Counter(
            "kiln_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "kiln_http_request_duration_seconds",
            "HTTP request duration by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_requests = Counter(
            "kiln_inference_requests", "Predictions by model version and outcome.", ["model", "version", "outcome"], registry=self.registry
        )
        self.inference_queue = Histogram(
            "kiln_inference_queue_seconds", "Time a prediction waited for its batch.", ["model", "version"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.inference_compute = Histogram(
            "kiln_inference_compute_seconds", "The onnxruntime run a prediction rode in.", ["model", "version"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.inference_batch = Histogram(
            "kiln_inference_batch_size", "Rows in the onnxruntime run a prediction rode in.", ["model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry,
        )  # fmt: skip
        self.inference_duration = Histogram(
            "kiln_inference_duration_seconds", "Queue wait plus compute of a prediction.", ["model", "version"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.models_loaded = Gauge(
            "kiln_models_loaded", "onnxruntime sessions loaded.", registry=self.registry, multiprocess_mode="livesum"
        )
        self.study_trials = study_trials_counter(self.registry)
        # Copies of requests run on an alias's mirror version, off the request path (services.usecases.mirror).
        self.mirror_requests = Counter(
            "kiln_mirror_requests", "Copies of requests run on a mirror version, by outcome: ok, error, or dropped (queue full).",
            ["model", "version", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.mirror_duration = Histogram(
            "kiln_mirror_duration_seconds", "A mirror version's run of a copied request (checks and compute).", ["model", "version"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        # The hot path's updates are tallied and folded in when read (see services.metric_tally); with several
        # processes, another may serve the scrape, so each update is folded in at once (only what changed is visited).
        self._tallies, self._write_through = Tallies(), multiprocess()
        self._http: dict[tuple[str, str, int], tuple[CountTally, HistogramTally]] = {}
        self._inference: dict[tuple[str, int], tuple[CountTally, HistogramTally, HistogramTally, HistogramTally, HistogramTally]] = {}
        self._failures: dict[tuple[str, int, str], CountTally] = {}

    def render(self) -> bytes:
        self._tallies.flush()
        return exposition(self.registry, self.scrape_time)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request, by route template: the last update a request makes."""
        key = (method, route, status)
        with self._tallies.lock:
            tallies = self._http.get(key)
            if tallies is None:
                tallies = self._http[key] = (self._tallies.count(self.http_requests.labels(method, route, str(status))),
                                             self._tallies.histogram(self.http_duration.labels(method, route)))  # fmt: skip
            tallies[0].inc()
            tallies[1].observe(seconds)
        if self._write_through:
            self._tallies.flush()

    async def counting_failures(self, version: ModelVersion, call: Awaitable[T]) -> T:
        """`await call`, counting its failure, if it fails, by outcome (see observe_failure)."""
        try:
            return await call
        except Exception as exc:
            self.observe_failure(version, exc)
            raise

    def observe_failure(self, version: ModelVersion, exc: BaseException) -> None:
        """Count a prediction that failed after its version was found: invalid_input, overloaded or error."""
        outcome = "overloaded" if isinstance(exc, Overloaded) else "invalid_input" if _client_error(exc) else "error"
        key = (version.model_name, version.version, outcome)
        with self._tallies.lock:
            tally = self._failures.get(key)
            if tally is None:
                tally = self._failures[key] = self._tallies.count(self.inference_requests.labels(key[0], str(key[1]), outcome))
            tally.inc()
        if self._write_through:
            self._tallies.flush()

    def observe_mirror(self, version: ModelVersion, outcome: str, seconds: float | None = None) -> None:
        """One copy a mirror ran (`seconds` it took) or dropped; called from the mirror's threads, never the request path."""
        labels = (version.model_name, str(version.version))
        self.mirror_requests.labels(*labels, outcome).inc()
        if seconds is not None:
            self.mirror_duration.labels(*labels).observe(seconds)

    def observe_inference(self, version: ModelVersion, result: BatchResult) -> None:
        key = (version.model_name, version.version)
        with self._tallies.lock:
            tallies = self._inference.get(key)
            if tallies is None:
                labels, tally = (version.model_name, str(version.version)), self._tallies.histogram
                tallies = self._inference[key] = (
                    self._tallies.count(self.inference_requests.labels(*labels, "ok")), tally(self.inference_queue.labels(*labels)),
                    tally(self.inference_compute.labels(*labels)), tally(self.inference_batch.labels(*labels)),
                    tally(self.inference_duration.labels(*labels)),
                )  # fmt: skip
            ok, queue, compute, batch, total = tallies
            ok.inc()
            queue.observe(result.queue_s)
            compute.observe(result.compute_s)
            batch.observe(result.batch_rows)
            total.observe(result.queue_s + result.compute_s)
        if self._write_through:  # before the answer goes out: a client may scrape another process right after it
            self._tallies.flush()


class WorkerMetrics:
    """What a training worker reports; its pool children write, its main process serves them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs_finished = Counter("kiln_training_jobs_finished", "Jobs that ended, by outcome.", ["outcome"], registry=self.registry)
        self.study_trials = study_trials_counter(self.registry)
        self.epoch_duration = Histogram(
            "kiln_training_epoch_duration_seconds", "Seconds per training epoch.", ["model"], registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
        )  # fmt: skip
        self.samples_per_second = Gauge(
            "kiln_training_samples_per_second", "Training throughput in the last epoch.", ["model"], registry=self.registry,
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.last_loss = Gauge(
            "kiln_training_last_loss", "The last epoch's loss, by split.", ["model", "split"], registry=self.registry,
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.gan_figure = Gauge(
            "kiln_gan_last_figure", "A GAN's last epoch: d_loss, g_loss, and the discriminator's mean verdicts d_x = D(x) and "
            "d_g_z = D(G(z)).", ["model", "figure"], registry=self.registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.warnings = Counter(
            "kiln_training_warnings_total", "Warnings training gave its jobs (a GAN's stability, a non-finite loss).", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.gpu_memory = Gauge(
            "kiln_worker_gpu_memory_bytes", "CUDA memory allocated by a training process.", ["worker"], registry=self.registry,
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.gpu_utilization = Gauge(
            "kiln_worker_gpu_utilization_ratio", "GPU utilisation seen by a training process (0-1).", ["worker"],
            registry=self.registry, multiprocess_mode="mostrecent",
        )  # fmt: skip

    def epoch(self, model: str, *, seconds: float, samples: int, metrics: dict[str, float]) -> None:
        self.epoch_duration.labels(model).observe(seconds)
        self.samples_per_second.labels(model).set(samples / seconds if seconds > 0 else 0.0)
        self.last_loss.labels(model, "train").set(metrics["loss"])
        if "val_loss" in metrics:
            self.last_loss.labels(model, "validation").set(metrics["val_loss"])
        for figure in GAN_FIGURES:
            if figure in metrics:
                self.gan_figure.labels(model, figure).set(metrics[figure])

    def gpu(self, worker: str, memory_bytes: int, utilization: float | None) -> None:
        """A training process's GPU after an epoch: memory in use and, where NVML can say, its utilisation (0 to 1)."""
        self.gpu_memory.labels(worker).set(memory_bytes)
        if utilization is not None:
            self.gpu_utilization.labels(worker).set(utilization)

    def render(self) -> bytes:
        return exposition(self.registry, [])


def serve_api_metrics(*, host: str, port: int, count_jobs_by_state: Callable[[], dict[str, int]],
                      queue_lengths: Callable[[], dict[str, int]]) -> None:  # fmt: skip
    """The API's /metrics on a port of its own (KILN_METRICS_PORT), summing what its processes wrote."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(JobsByStateCollector(count_jobs_by_state))
    registry.register(QueueLengthCollector(queue_lengths))
    start_http_server(port, addr=host, registry=registry)


def serve_worker_metrics(*, host: str, port: int) -> None:
    """The worker's /metrics on its own port, summing what its pool children wrote."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)


def _client_error(exc: BaseException) -> bool:
    """Whether the request itself was at fault (bad input, a body over the limit), not the server."""
    return isinstance(exc, (InvalidInput, PayloadTooLarge)) or 400 <= getattr(exc, "status_code", 0) < 500
