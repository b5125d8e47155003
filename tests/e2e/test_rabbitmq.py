"""RabbitMQ as the broker (issue 19, part): the e2e job on a real RabbitMQ, whose queues are quorum queues, with a
real API and worker on PostgreSQL, and jobs through a crash of a private node. scripts/ensure-services.sh starts
rabbitmq-server, or installs it, for make test."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import job_now, one_version_each, train_digits_and_predict, wait_for_job, wait_job_until
from tests.e2e.private_rabbitmq import PrivateRabbit, private_rabbitmq
from tests.factories import job_body, tiny_job

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _queues() -> dict[str, str]:
    """Every queue on the broker with its type, as rabbitmqctl lists them."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "type"], capture_output=True, text=True, check=True, timeout=60)
    return dict(line.split("\t")[:2] for line in listed.stdout.splitlines() if "\t" in line and not line.startswith("name"))


@pytest.fixture
def rabbit_stack(stack_on: Any) -> Any:
    stack = stack_on(AMQP_URL)
    yield stack
    stack.close()  # first, or the worker declares its queue again
    for name in _queues():  # leave the shared broker as found
        if name.startswith(stack.env["KILN_QUEUE_PREFIX"]):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", name], capture_output=True, timeout=60)


def test_a_job_trains_registers_and_serves_through_rabbitmq_quorum_queues(rabbit_stack: Any) -> None:
    result = train_digits_and_predict(rabbit_stack.url, rabbit_stack.headers)
    assert result["job"]["state"] == "succeeded" and result["accuracy"] >= 0.95
    prefix = rabbit_stack.env["KILN_QUEUE_PREFIX"]
    assert _queues().get(f"{prefix}cpu") == "quorum"  # replicated and durable, not a classic queue
    with httpx.Client(base_url=rabbit_stack.url, headers=rabbit_stack.headers, timeout=30) as client:
        locations = [client.post("/v1/jobs", json=tiny_job(model_name=f"rabbit-{i}")).headers["location"] for i in range(3)]
        assert [wait_for_job(client, loc)["state"] for loc in locations] == ["succeeded"] * 3
    assert "Connected to amqp://guest:**@127.0.0.1:5672//" in rabbit_stack.logs(tail=10**7)  # the worker consumed from it


EPOCHS = 15  # 2 s here, far longer on a loaded machine: training when the node dies, and done before or after it is back
THROUGH_RESTART = job_body(model_name="through-restart", training={"epochs": EPOCHS, "batch_size": 4})


def test_jobs_queued_and_running_through_a_rabbitmq_crash_all_complete_from_the_broker_s_own_copies(stack_on: Any) -> None:
    with private_rabbitmq() as rabbit:  # the crash is this node's: the shared RabbitMQ keeps serving
        # The sweeper would only re-send a lost message after 600 s: every job that completes ran from the broker's copy.
        stack = stack_on(rabbit.url, redispatch_after_s="600", torch_threads="1")  # one thread: no spinning on a busy machine
        try:
            with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as client:
                jobs = _jobs_through_a_crash(client, rabbit, queue=stack.env["KILN_QUEUE_PREFIX"] + "cpu")
                assert [j["state"] for j in jobs] == ["succeeded"] * 5, stack.logs()
                assert [j["attempt"] for j in jobs] == [1] * 5  # no job was taken back or run twice
                assert [e["epoch"] for e in jobs[0]["history"]] == list(range(1, EPOCHS + 1))  # it trained on through the outage
                one_version_each(client, jobs)
            worker_log = (stack.tmp / "worker-0.log").read_text(errors="replace")
            assert len(stack.workers) == 1 and stack.workers[0].poll() is None  # the same worker process, never restarted
            assert "Connection to broker lost" in worker_log
            assert worker_log.count(f"Connected to amqp://guest:**@127.0.0.1:{rabbit.port}//") == 2  # it reconnected by itself
            assert "message was lost; sent again" not in stack.logs(tail=10**8)
        finally:
            stack.close()  # before its broker goes: a worker told to stop with no broker waits out its reconnects


def _jobs_through_a_crash(client: httpx.Client, rabbit: PrivateRabbit, *, queue: str) -> list[dict[str, Any]]:
    """One job training and three queued when the node is SIGKILLed, one posted after it is back: each as it ended."""
    running = client.post("/v1/jobs", json=THROUGH_RESTART).json()["id"]
    queued = [client.post("/v1/jobs", json=tiny_job(model_name=f"queued{i}")).json()["id"] for i in range(3)]
    wait_job_until(client, running, lambda j: j["state"] == "running")
    assert rabbit.waiting(queue) == (3, 1)  # three messages on the broker, the fourth held by the worker's one consumer
    rabbit.crash()
    try:
        _check_outage_answers(client, running)
    finally:
        rabbit.start()  # the same node on the same port, from what its quorum queues wrote to disk
    _wait_ready(client)
    after = client.post("/v1/jobs", json=tiny_job(model_name="after-restart"))
    assert after.status_code == 202, after.text  # the API's publisher reconnected
    jobs = [wait_for_job(client, f"/v1/jobs/{j}", timeout=300) for j in [running, *queued, after.json()["id"]]]
    deadline = time.monotonic() + 30  # the running job's message came back too: the worker takes it, and it claims nothing
    while rabbit.queue(queue) != (0, 0):
        assert time.monotonic() < deadline, rabbit.queue(queue)
        time.sleep(1)
    return jobs


def _check_outage_answers(client: httpx.Client, running: str) -> None:
    """While the broker is down: readiness fails on the broker alone, reads answer from SQL, a new job is refused clearly."""
    deadline = time.monotonic() + 20
    while (ready := client.get("/readyz")).status_code == 200:
        assert time.monotonic() < deadline, "readiness never noticed the broker was gone"
        time.sleep(0.1)
    assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("error")
    assert ready.json()["checks"]["database"] == "ok"
    assert job_now(client, running)["state"] in {"running", "succeeded"}  # the pool child trains on without the broker
    refused = client.post("/v1/jobs", json=tiny_job(model_name="during-outage"))
    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
    assert refused.json()["error"]["code"] == "unavailable" and "not started" in refused.json()["error"]["message"]
    listed = client.get("/v1/jobs", params={"limit": 100}).json()["data"]
    (row,) = [j for j in listed if j["model_name"] == "during-outage"]
    assert row["state"] == "failed" and row["error"].startswith("could not enqueue")  # never run later behind the client's back


def _wait_ready(client: httpx.Client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "readiness never recovered"
        time.sleep(0.2)
