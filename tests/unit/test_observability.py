"""The Grafana dashboard asks only for series Kiln exposes; the compose file provisions it."""

from __future__ import annotations

import json
import re

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.metrics import ApiMetrics, WorkerMetrics, multiprocess
from services.registry.entities import ModelVersion
from services.registry.tables import utcnow
from services.serving.batcher import BatchResult
from tests.conftest import ROOT

DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "kiln.json").read_text())


def _exposed() -> set[str]:
    """Every sample name the API and a worker expose once they have seen some traffic."""
    assert not multiprocess()
    api = ApiMetrics(lambda: {"queued": 1}, lambda: {"cpu": 0})
    api.observe_http("GET", "/healthz", 200, 0.01)
    version = ModelVersion(model_name="m", job_id=None, artifact_sha256="a" * 64, artifact_size=1, signature={}, metrics={}, spec={},
                           hyperparameters={}, dataset={}, version=1, created_at=utcnow())  # fmt: skip
    api.observe_inference(version, BatchResult([np.zeros(1)], 0.001, 0.002, 4))
    api.observe_mirror(version, "ok", 0.003)
    worker = WorkerMetrics()
    worker.epoch("m", seconds=0.5, samples=100, metrics={"loss": 0.3, "val_loss": 0.4})
    worker.epoch("gan", seconds=0.5, samples=100, metrics={"loss": 0.9, "d_loss": 0.6, "g_loss": 0.9, "d_x": 0.6, "d_g_z": 0.4})
    worker.warnings.labels("gan").inc()
    worker.jobs_finished.labels("succeeded").inc()
    worker.study_trials.labels("pruned").inc()
    worker.gpu_memory.labels("host:1").set(1)
    worker.gpu_utilization.labels("host:1").set(0.5)
    text = (api.render() + worker.render()).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_dashboard_expression_names_exposed_metrics() -> None:
    exposed = _exposed()
    expressions = [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]
    named = {name for expr in expressions for name in re.findall(r"\bkiln_[a-z_]+", expr)}
    assert named and named <= exposed, named - exposed


def test_dashboard_covers_what_operators_watch() -> None:
    text = json.dumps(DASHBOARD)
    for metric in (
        "kiln_http_requests_total",
        "kiln_http_request_duration_seconds_bucket",
        "kiln_inference_duration_seconds_bucket",
        "kiln_inference_batch_size_sum",
        "kiln_training_jobs",
        "kiln_training_last_loss",
        "kiln_broker_queue_length",
        "kiln_gan_last_figure",
        "kiln_training_warnings_total",
        "kiln_study_trials_total",
    ):
        assert metric in text, metric  # fmt: skip
    assert "histogram_quantile(0.99" in text and 'status=~\\"5..\\"' in text


def test_compose_provisions_grafana_with_prometheus_and_scrapes_workers() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    for mount in mounts:
        assert (ROOT / mount.split(":")[0]).exists(), mount
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == DASHBOARD["panels"][0]["datasource"]["uid"]
    targets = {t for job in yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["scrape_configs"]
               for sc in job["static_configs"] for t in sc["targets"]}  # fmt: skip
    assert {"api:8000", "worker:9101"} <= targets
