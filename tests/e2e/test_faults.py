"""Fault tests on real processes: a worker killed mid-epoch, a private Redis and PostgreSQL restarted, a job killing its worker.

Each test runs its own API and worker on a PostgreSQL database of its own, with recovery timings
shortened (heartbeat 0.5 s, silent after 3 s, sweeps every 0.5 s) so a recovery takes seconds.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import migrate
from tests.e2e.helpers import job_now, kiln_env, one_version_each, spawn, spawn_on_free_ports, wait_for_job, wait_job_until
from tests.e2e.private_postgres import private_postgres
from tests.e2e.stacks import Stack
from tests.factories import gan_body, job_body, tiny_job

SLOW_JOB = job_body(model_name="slow", training={"epochs": 40, "batch_size": 4})  # about 0.15 s an epoch here
OUTAGE_JOB = job_body(model_name="slow", training={"epochs": 12, "batch_size": 4})  # outlasts a restart


def test_a_worker_killed_mid_epoch_is_resumed_by_its_restart_from_the_last_checkpoint(stack_on: Any, redis_url: str) -> None:
    stack = stack_on(redis_url)
    with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as client:
        job_id = client.post("/v1/jobs", json=SLOW_JOB).json()["id"]
        before = wait_job_until(client, job_id, lambda j: j["epoch"] >= 5)
        stack.kill_worker()  # mid-epoch: an epoch takes about 0.15 s and ended just now
        killed_at = job_now(client, job_id)
        assert killed_at["state"] == "running" and killed_at["attempt"] == 1
        stack.start_worker()  # as a supervisor would
        job = wait_for_job(client, f"/v1/jobs/{job_id}", timeout=120)
        assert job["state"] == "succeeded", (job["error"], stack.logs())
        assert job["attempt"] == 2
        assert [e["epoch"] for e in job["history"]] == list(range(1, 41))  # continuous, each epoch once
        kept = killed_at["checkpoint_epoch"]
        assert kept >= before["epoch"]
        # The epochs up to the checkpoint were not trained again: their records are the first attempt's.
        assert job["history"][:kept] == killed_at["history"][:kept]
        assert f"resumes after epoch {kept}" in stack.logs(tail=10**8)
        one_version_each(client, [job])


def test_a_killed_gan_job_resumes_bit_for_bit(stack_on: Any, redis_url: str) -> None:
    """Both networks, both optimizers and the latent generator come back: the generator it registers is, byte for byte,
    the one an uninterrupted run of the same job registers."""
    stack = stack_on(redis_url)
    body = gan_body(epochs=60, training={"batch_size": 16, "label_noise": 0.1, "label_smoothing": 0.1})
    with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as client:
        job_id = client.post("/v1/jobs", json=body | {"model_name": "killed-gan"}).json()["id"]
        wait_job_until(client, job_id, lambda j: j["epoch"] >= 3)
        stack.kill_worker()
        killed_at = job_now(client, job_id)
        assert killed_at["state"] == "running" and killed_at["epoch"] < 60
        stack.start_worker()
        job = wait_for_job(client, f"/v1/jobs/{job_id}", timeout=240)
        assert job["state"] == "succeeded" and job["attempt"] == 2, (job["error"], stack.logs())
        whole = wait_for_job(client, client.post("/v1/jobs", json=body | {"model_name": "whole-gan"}).headers["location"], timeout=240)
        assert whole["state"] == "succeeded", whole["error"]
        resumed = client.get(f"/v1/models/killed-gan/versions/{job['version']}").json()
        uninterrupted = client.get(f"/v1/models/whole-gan/versions/{whole['version']}").json()
    assert f"resumes after epoch {killed_at['checkpoint_epoch']}" in stack.logs(tail=10**8)
    assert [e["metrics"] for e in job["history"]] == [e["metrics"] for e in whole["history"]]
    assert resumed["artifact"]["sha256"] == uninterrupted["artifact"]["sha256"]


def test_jobs_queued_and_running_through_a_redis_restart_all_complete(stack_on: Any, tmp_path: Path) -> None:
    def redis_cmd(port: int) -> list[str]:
        return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    log = tmp_path / "redis.log"
    redis, (port,) = spawn_on_free_ports(lambda port: spawn(redis_cmd(port), kiln_env(), log), log, ready=_redis_answers)
    try:
        _wait_redis(port)
        stack = stack_on(f"redis://127.0.0.1:{port}/0")
        with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as client:
            running = client.post("/v1/jobs", json=SLOW_JOB).json()["id"]
            queued = [client.post("/v1/jobs", json=tiny_job(model_name=f"queued{i}")).json()["id"] for i in range(3)]
            wait_job_until(client, running, lambda j: j["state"] == "running")
            redis.send_signal(signal.SIGKILL)  # no persistence: every queued message is gone
            redis.wait()
            redis = spawn(redis_cmd(port), kiln_env(), log)  # the same port, just released
            _wait_redis(port)
            jobs = [wait_for_job(client, f"/v1/jobs/{j}", timeout=120) for j in [running, *queued]]
            assert [j["state"] for j in jobs] == ["succeeded"] * 4, stack.logs()
            assert "message was lost; sent again" in stack.logs(tail=10**8)
            one_version_each(client, jobs)
    finally:
        redis.kill()
        redis.wait()


def _redis_answers(port: int) -> bool:
    import redis as redis_client

    try:
        return bool(redis_client.Redis(port=port).ping())
    except redis_client.ConnectionError:
        return False


def _wait_redis(port: int) -> None:
    for _ in range(100):
        if _redis_answers(port):
            return
        time.sleep(0.05)
    raise AssertionError("redis did not start")


def _wait_for_log(stack: Stack, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in stack.logs(tail=10**8):
        assert time.monotonic() < deadline, f"never logged {text!r}: {stack.logs()}"
        time.sleep(0.1)


def test_a_postgresql_restart_mid_training_fails_readiness_then_resumes_the_job_without_500s(stack_on: Any, redis_url: str) -> None:
    statuses: list[int] = []
    with private_postgres() as cluster:  # the outage is this cluster's: the shared PostgreSQL keeps serving
        database = cluster.url.replace("postgresql://", "postgresql+psycopg://", 1)
        migrate(database)
        stack = stack_on(redis_url, database)
        with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as client:
            job_id = client.post("/v1/jobs", json=OUTAGE_JOB).json()["id"]
            before = wait_job_until(client, job_id, lambda j: j["epoch"] >= 1)  # an epoch row is in: 11 of 12 remain
            assert before["state"] == "running" and before["epoch"] < 12
            cluster.stop()
            try:
                deadline = time.monotonic() + 20
                while (ready := client.get("/readyz")).status_code == 200 and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")
                for path in ("/v1/jobs", f"/v1/jobs/{job_id}", "/v1/models"):
                    statuses.append(client.get(path).status_code)
                refused = client.post("/v1/jobs", json=tiny_job(model_name="during-outage"))
                statuses.append(refused.status_code)
                assert refused.json()["error"]["code"] == "unavailable" and refused.headers["retry-after"]
                _wait_for_log(stack, "it will be resumed")  # the outage reached the attempt at its next epoch end
            finally:
                cluster.start()
            assert statuses == [503] * 4  # a retryable 503 with Kiln's error body, never a 500
            deadline = time.monotonic() + 30
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "readiness never recovered"
                time.sleep(0.2)
            job = wait_for_job(client, f"/v1/jobs/{job_id}", timeout=300)  # the job the outage stopped (a loaded machine trains slowly)
            assert job["state"] == "succeeded", (job["error"], stack.logs())
            assert job["attempt"] >= 2  # stopped by the outage, taken back by the sweeper and resumed
            assert [e["epoch"] for e in job["history"]] == list(range(1, 13))
            assert client.get("/v1/jobs", params={"limit": 100}).json()["count"] == 1  # the refused job left no row
            one_version_each(client, [job])
            stack.close()  # before its database goes


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(stack_on: Any, redis_url: str) -> None:
    stack = stack_on(redis_url)
    with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as client:
        job_id = client.post("/v1/jobs", json=SLOW_JOB).json()["id"]
        for attempt in (1, 2, 3):  # each attempt's training process dies as soon as it starts
            job = wait_job_until(client, job_id, lambda j, a=attempt: j["state"] == "running" and j["attempt"] == a and j["lease_owner"])
            os.kill(int(job["lease_owner"].rsplit(":", 1)[1]), signal.SIGKILL)  # Celery starts a new pool child
        job = wait_for_job(client, f"/v1/jobs/{job_id}", timeout=60)
        assert job["state"] == "failed" and job["attempt"] == 3, stack.logs()
        assert "gave up after 3 attempts" in job["error"]
        assert client.get("/v1/models/slow/versions").status_code == 404
        time.sleep(2)  # and it stays failed: no further attempt
        assert job_now(client, job_id)["attempt"] == 3
    assert not list((stack.tmp / "checkpoints").glob("*.pt"))
