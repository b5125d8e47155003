"""Metrics across processes: exact totals from 2 API processes and a prefork worker, checked by promtool and a real Prometheus."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import migrate
from tests.e2e.helpers import answers, kiln_env, mint_key, spawn, spawn_on_free_ports, stop, wait_for_job, wait_until_ready
from tests.factories import gan_body, tiny_job
from tests.integration.test_studies import study_body

N_REQUESTS, N_JOBS, EPOCHS = 200, 4, 3


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data_dir = tmp_path_factory.mktemp("metrics")
    migrate(f"sqlite:///{data_dir / 'kiln.db'}")
    env = kiln_env(data_dir=str(data_dir), broker_url=redis_url)
    headers = mint_key(env)
    logs = [data_dir / "api.log", data_dir / "worker.log"]
    # Ready when /readyz answers: the test counts /healthz requests exactly.
    api, (api_port,) = spawn_on_free_ports(
        lambda port: spawn([sys.executable, "-m", "api"], env | {"KILN_PORT": str(port), "KILN_API_WORKERS": "2"}, logs[0]),
        logs[0], ready=lambda port: answers(f"http://127.0.0.1:{port}/readyz"))  # fmt: skip
    env |= {"KILN_PORT": str(api_port)}
    worker = None
    try:
        worker_env = env | {"KILN_WORKER_CONCURRENCY": "2"}
        worker, (worker_port,) = spawn_on_free_ports(
            lambda port: spawn([sys.executable, "-m", "worker"], worker_env | {"KILN_WORKER_METRICS_PORT": str(port)}, logs[1]),
            logs[1], ready=lambda port: answers(f"http://127.0.0.1:{port}/metrics"))  # fmt: skip
        wait_until_ready(f"http://127.0.0.1:{api_port}", [api, worker], logs)
        yield {"api": f"http://127.0.0.1:{api_port}", "worker": f"http://127.0.0.1:{worker_port}", "data_dir": data_dir,
               "api_port": api_port, "worker_port": worker_port, "headers": headers, "env": env}  # fmt: skip
    finally:
        stop(api)
        if worker is not None:
            stop(worker)


def test_api_totals_are_exact_across_two_processes(stack: dict) -> None:
    for _ in range(N_REQUESTS):
        with httpx.Client() as client:  # a new connection each time, so both processes take requests
            assert client.get(f"{stack['api']}/healthz").status_code == 200
    text = httpx.get(f"{stack['api']}/metrics").text
    assert samples(text, "kiln_http_requests_total", route="/healthz", status="200") == N_REQUESTS
    assert samples(text, "kiln_http_request_duration_seconds_count", route="/healthz") == N_REQUESTS
    pids = {p.name.rsplit("_", 1)[-1] for p in (stack["data_dir"] / "metrics" / f"api-{stack['api_port']}").glob("counter_*.db")}
    assert len(pids) >= 2, pids  # both processes counted some


def test_worker_totals_are_exact_across_prefork_children(stack: dict) -> None:
    with httpx.Client(base_url=stack["api"], timeout=30, headers=stack["headers"]) as client:
        locations = [client.post("/v1/jobs", json=tiny_job(model_name="metered", training={"epochs": EPOCHS})).headers["location"]
                     for _ in range(N_JOBS)]  # fmt: skip
        gan = _collapsing_gan()
        locations.append(client.post("/v1/jobs", json=gan).headers["location"])
        study = client.post("/v1/studies", json=study_body(job=tiny_job(model_name="metered-study"))).headers["location"]
        assert all(wait_for_job(client, loc)["state"] == "succeeded" for loc in locations)
        assert wait_for_job(client, study)["state"] == "succeeded"
        api_text = client.get("/metrics").text
    text = httpx.get(stack["worker"]).text
    assert samples(text, "kiln_training_jobs_finished_total", outcome="succeeded") == N_JOBS + 1 + 2  # and the study's two trials
    assert samples(text, "kiln_study_trials_total", outcome="complete") == 2  # each counted once, by whichever process settled it
    for figure in ("d_loss", "g_loss", "d_x", "d_g_z"):
        assert samples(text, "kiln_gan_last_figure", model="metered-gan", figure=figure) > 0
    assert samples(text, "kiln_training_warnings_total", model="metered-gan") == 1  # its samples collapsed at epoch 1
    assert samples(text, "kiln_training_epoch_duration_seconds_count", model="metered") == N_JOBS * EPOCHS
    assert samples(text, "kiln_training_last_loss", model="metered", split="train") > 0
    assert samples(api_text, "kiln_training_jobs", state="succeeded") >= N_JOBS
    assert "kiln_broker_queue_length" in api_text


def test_both_expositions_pass_promtool(stack: dict) -> None:
    for url in (f"{stack['api']}/metrics", stack["worker"]):
        result = subprocess.run(["promtool", "check", "metrics"], input=httpx.get(url).text, capture_output=True, text=True)
        assert result.returncode == 0, (url, result.stdout, result.stderr)


def test_a_real_prometheus_scrapes_the_api_and_the_worker(stack: dict, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: kiln-api
    static_configs: [{{targets: ["127.0.0.1:{stack["api_port"]}"]}}]
  - job_name: kiln-worker
    static_configs: [{{targets: ["127.0.0.1:{stack["worker_port"]}"]}}]
""")
    log = tmp_path / "prometheus.log"
    prometheus, (port,) = spawn_on_free_ports(
        lambda port: spawn(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{port}"], kiln_env(), log),
        log, ready=lambda port: answers(f"http://127.0.0.1:{port}/-/ready"))  # fmt: skip
    try:
        found: dict[str, list] = {}
        deadline = time.monotonic() + 60
        queries = ("kiln_http_requests_total", "kiln_training_jobs", "kiln_training_jobs_finished_total", "kiln_gan_last_figure",
                   "kiln_study_trials_total")  # fmt: skip
        while time.monotonic() < deadline and len(found) < len(queries):
            for query in queries:
                try:
                    result = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5).json()
                except (httpx.TransportError, ValueError):  # not up yet
                    continue
                if result.get("status") == "success" and result["data"]["result"]:
                    found[query] = result["data"]["result"]
            time.sleep(0.5)
        assert len(found) == len(queries), ((tmp_path / "prometheus.log").read_text()[-2000:], found)
        jobs = {r["metric"]["job"] for series in found.values() for r in series}
        assert jobs == {"kiln-api", "kiln-worker"}
    finally:
        stop(prometheus)


def test_api_metrics_can_be_served_on_a_port_of_their_own(stack: dict) -> None:
    log = stack["data_dir"] / "api-apart.log"
    apart = stack["env"] | {"KILN_API_WORKERS": "2"}
    api, (api_port, metrics_port) = spawn_on_free_ports(
        lambda port, metrics: spawn([sys.executable, "-m", "api"], apart | {"KILN_PORT": str(port), "KILN_METRICS_PORT": str(metrics)},
                                    log),
        log, ready=lambda port, metrics: answers(f"http://127.0.0.1:{port}/readyz") and answers(f"http://127.0.0.1:{metrics}/metrics"),
        ports=2)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 60
        while not answers(f"{url}/readyz"):
            assert time.monotonic() < deadline and api.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        for _ in range(10):
            with httpx.Client() as client:
                assert client.get(f"{url}/v1/models", headers=stack["headers"]).status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 404
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert samples(text, "kiln_http_requests_total", route="/v1/models", status="200") == 10
        assert "kiln_broker_queue_length" in text
        _assert_job_gauge_matches_the_registry(text, url, stack["headers"])
    finally:
        stop(api)


def _assert_job_gauge_matches_the_registry(text: str, url: str, headers: dict[str, str]) -> None:
    """kiln_training_jobs has one sample per job state, each the number of jobs the API lists in that state."""
    jobs = httpx.get(f"{url}/v1/jobs", params={"limit": 100}, headers=headers).json()["data"]
    by_state = Counter(job["state"] for job in jobs)
    gauge = {s.labels["state"]: s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "kiln_training_jobs"}
    assert set(gauge) == {"queued", "running", "succeeded", "failed", "cancelled"}, gauge
    assert gauge == {state: float(by_state[state]) for state in gauge}, (gauge, by_state)


def _collapsing_gan() -> dict:
    """A GAN of 2 epochs whose generator gives one sample for every z: one warning."""
    body = gan_body(epochs=2, training={"optimizer": {"name": "adam", "learning_rate": 1e-7}})
    body["model"]["generator"]["layers"][-1]["kernel_initializer"] = "zeros"
    return body | {"model_name": "metered-gan"}
