"""Tallied updates read exactly as prometheus_client's own updates would, once flushed; a scrape flushes them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.metric_tally import Tallies
from services.metrics import LATENCY_BUCKETS, ApiMetrics
from services.registry.entities import ModelVersion
from services.registry.tables import utcnow
from services.serving.batcher import BatchResult

# On a bound, between bounds, below the first, above the last, zero.
VALUES = [0.0, 0.0005, 0.0004, 0.001, 0.0011, 0.25, 10.0, 11.0, 1e9, 0.003, 0.003]


def _metrics(registry: CollectorRegistry) -> tuple[Histogram, Counter]:
    return Histogram("h", "h", ["m"], buckets=LATENCY_BUCKETS, registry=registry), Counter("c", "c", ["m"], registry=registry)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples
            if not s.name.endswith("_created")}  # fmt: skip


def test_flushed_tallies_read_as_prometheus_clients_own_updates() -> None:
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    (direct_h, direct_c), (tallied_h, tallied_c) = _metrics(direct), _metrics(tallied)
    tallies = Tallies()
    histogram, count = tallies.histogram(tallied_h.labels("a")), tallies.count(tallied_c.labels("a"))
    for round_ in range(3):  # flushes add to what earlier flushes wrote
        for value in VALUES[round_:]:
            direct_h.labels("a").observe(value)
            direct_c.labels("a").inc()
            histogram.observe(value)
            count.inc()
        tallies.flush()
        assert _samples(tallied) == pytest.approx(_samples(direct), rel=1e-12)  # sums added in another order


def test_nothing_reaches_prometheus_client_before_a_flush() -> None:
    registry = CollectorRegistry()
    histogram, _ = _metrics(registry)
    tallies = Tallies()
    tallies.histogram(histogram.labels("a")).observe(0.3)
    assert _samples(registry)[("h_count", (("m", "a"),))] == 0
    tallies.flush()
    assert _samples(registry)[("h_count", (("m", "a"),))] == 1


def test_a_scrape_reads_every_request_even_while_requests_are_counted_on_another_thread() -> None:
    api = ApiMetrics(lambda: {}, lambda: {})
    version = ModelVersion(model_name="m", job_id=None, artifact_sha256="a" * 64, artifact_size=1, signature={}, metrics={}, spec={},
                           hyperparameters={}, dataset={}, version=1, created_at=utcnow())  # fmt: skip
    n, done = 20_000, threading.Event()

    def requests() -> None:
        for i in range(n):
            api.observe_inference(version, BatchResult([np.zeros(1)], 0.0001, 0.0002, i % 7 + 1))
            api.observe_http("POST", "/p", 200, 0.0003)
        done.set()

    worker = threading.Thread(target=requests)
    worker.start()
    while not done.is_set():
        api.render()  # flushes concurrently with the updates
    worker.join()
    text = api.render().decode()
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("kiln_http_requests_total", (("method", "POST"), ("route", "/p"), ("status", "200")))] == n
    assert values[("kiln_http_request_duration_seconds_count", (("method", "POST"), ("route", "/p")))] == n
    assert values[("kiln_inference_requests_total", (("model", "m"), ("outcome", "ok"), ("version", "1")))] == n
    assert values[("kiln_inference_batch_size_sum", (("model", "m"), ("version", "1")))] == sum(i % 7 + 1 for i in range(n))


def test_a_flush_visits_only_the_tallies_updated_since_the_last_one() -> None:
    registry = CollectorRegistry()
    histogram, counter = _metrics(registry)
    tallies = Tallies()
    made = [tallies.histogram(histogram.labels(str(i))) for i in range(200)] + [tallies.count(counter.labels(str(i))) for i in range(200)]
    visited: list[object] = []
    for tally in made:
        tally.child = _Recording(tally.child, visited, tally)
    made[3].observe(0.1)  # type: ignore[union-attr]
    made[3].observe(0.2)  # type: ignore[union-attr]
    made[250].inc()  # type: ignore[union-attr]
    tallies.flush()
    tallies.flush()  # nothing changed since: nothing visited
    assert visited == [made[3], made[250]]


class _Recording:
    """A prometheus_client child that records which tally touched it."""

    def __init__(self, child: object, visited: list[object], tally: object) -> None:
        self.child, self.visited, self.tally = child, visited, tally
        self._upper_bounds = getattr(child, "_upper_bounds", None)
        self._buckets, self._sum = getattr(child, "_buckets", None), getattr(child, "_sum", None)
        if self._sum is not None:
            self._sum = _Touch(self._sum, lambda: visited.append(tally))

    def inc(self, amount: float) -> None:
        self.visited.append(self.tally)
        self.child.inc(amount)  # type: ignore[attr-defined]


class _Touch:
    def __init__(self, value: object, touched: object) -> None:
        self.value, self.touched = value, touched

    def inc(self, amount: float) -> None:
        self.touched()  # type: ignore[operator]
        self.value.inc(amount)  # type: ignore[attr-defined]
