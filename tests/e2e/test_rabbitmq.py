"""RabbitMQ as the broker (issue 19, part): the e2e job on a real RabbitMQ, whose queues are quorum queues, with a
real API and worker on PostgreSQL. scripts/ensure-services.sh starts rabbitmq-server, or installs it, for make test."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import train_digits_and_predict, wait_for_job
from tests.factories import tiny_job

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
