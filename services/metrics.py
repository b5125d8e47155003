"""Every Prometheus metric Kiln exposes, in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.registry.entities import JobState, ModelVersion
from services.serving.batcher import BatchResult

# Seconds; fine at the low end, where a predict on a small model lands.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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


class ApiMetrics:
    """The API's metrics, on a registry of their own so each app instance starts clean."""

    def __init__(self, count_jobs_by_state: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
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
        self.registry.register(JobsByStateCollector(count_jobs_by_state))
        self._children: dict[tuple[str, int], tuple[Any, ...]] = {}

    def observe_inference(self, version: ModelVersion, result: BatchResult) -> None:
        key = (version.model_name, version.version)
        children = self._children.get(key)
        if children is None:  # looked up once per version: `labels()` takes a lock and builds a key each call
            labels = (version.model_name, str(version.version))
            children = self._children[key] = (
                self.inference_requests.labels(*labels, "ok"), self.inference_queue.labels(*labels),
                self.inference_compute.labels(*labels), self.inference_batch.labels(*labels),
            )  # fmt: skip
        ok, queue, compute, batch = children
        ok.inc()
        queue.observe(result.queue_s)
        compute.observe(result.compute_s)
        batch.observe(result.batch_rows)
