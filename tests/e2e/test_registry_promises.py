"""README promises that rest on the shared registry, on the PostgreSQL + Redis stack.

- `kiln-admin revoke-key`: the key stops working within KILN_AUTH_CACHE_S (default 5 s).
- `Idempotency-Key`: repeats, concurrent ones included, return the same job; one row, trained once.
- `DELETE /v1/datasets/{id}` is a 409 while a queued or running job uses the dataset.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.datasets_factory import iris_csv
from tests.e2e.helpers import wait_for_job
from tests.e2e.replicas import create_key, revoke_key, wait_for
from tests.factories import job_body, tiny_job

AUTH_CACHE_S = 5.0  # the README's default; the stack does not change it


def test_a_revoked_key_stops_working_within_the_auth_cache(kiln: dict) -> None:
    key_id, headers = create_key(kiln["env"], "read")
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=headers) as client:
        assert client.get("/v1/models").status_code == 200  # looked up, and now cached by the API
        revoke_key(kiln["env"], key_id)
        revoked_at = time.monotonic()
        answers: list[tuple[float, httpx.Response]] = []

        def refused() -> bool:
            started = time.monotonic()
            answers.append((started - revoked_at, client.get("/v1/models")))
            return answers[-1][1].status_code == 401

        wait_for(refused, what="the revoked key to be refused", timeout=AUTH_CACHE_S + 5)
    last = answers[-1][1]
    assert last.headers["www-authenticate"].startswith("Bearer") and last.json()["error"]["field"] == "Authorization"
    still_worked = [after for after, response in answers if response.status_code == 200]
    assert {r.status_code for _, r in answers} <= {200, 401}
    # Requests that began after the cache's lifetime (plus scheduling slack) were all refused.
    assert max(still_worked, default=0.0) < AUTH_CACHE_S + 1.0, still_worked


def _post_at_once(url: str, headers: dict[str, str], body: dict[str, Any], n: int) -> list[httpx.Response]:
    """`n` POST /v1/jobs with the same headers and body, released together from threads of their own."""
    gate, responses = threading.Barrier(n), dict[int, httpx.Response]()

    def post(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
            client.get("/healthz")  # connected before the gate opens
            gate.wait()
            responses[i] = client.post("/v1/jobs", json=body)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [responses[i] for i in range(n)]


def test_concurrent_requests_with_one_idempotency_key_make_one_job(kiln: dict) -> None:
    body, headers = tiny_job(model_name="idempotent"), kiln["headers"] | {"Idempotency-Key": "e2e-once"}
    responses = _post_at_once(kiln["url"], headers, body, 8)
    assert [r.status_code for r in responses] == [202] * 8, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sorted(r.headers.get("idempotent-replayed", "") for r in responses) == [""] + ["true"] * 7  # one made it
    job_id = responses[0].json()["id"]
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        job = wait_for_job(client, f"/v1/jobs/{job_id}")
        assert job["state"] == "succeeded" and job["attempt"] == 1, job["error"]
        rows = [j for j in client.get("/v1/jobs", params={"limit": 200}).json()["data"] if j["model_name"] == "idempotent"]
        assert [j["id"] for j in rows] == [job_id]  # one row
        assert client.get("/v1/models/idempotent/versions").json()["count"] == 1  # trained once
        again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "e2e-once"})
        assert again.status_code == 202 and again.json()["id"] == job_id and again.headers["idempotent-replayed"] == "true"
        other = client.post("/v1/jobs", json=tiny_job(model_name="idempotent", training={"epochs": 3}),
                            headers={"Idempotency-Key": "e2e-once"})  # fmt: skip
        assert other.status_code == 409 and other.json()["error"]["field"] == "Idempotency-Key"


def _state(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return client.get(f"/v1/jobs/{job_id}").json()


def _refused_delete(client: httpx.Client, dataset_id: str) -> None:
    response = client.delete(f"/v1/datasets/{dataset_id}")
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["field"] == "dataset_id" and "queued or running job" in error["message"]


def test_deleting_a_dataset_a_queued_or_running_job_uses_is_a_409(kiln: dict) -> None:
    csv = iris_csv().replace("species", "iris_kind")  # bytes of its own: no registered version learnt from them
    with httpx.Client(base_url=kiln["url"], timeout=30, headers=kiln["headers"]) as client:
        dataset = client.post("/v1/datasets", files={"file": ("iris-in-use.csv", csv)}, data={"target": "iris_kind"})
        assert dataset.status_code == 201, dataset.text
        dataset_id = dataset.json()["id"]
        # The stack's one worker trains one job at a time: while `blocker` runs, `user` waits in the queue.
        blocker = client.post("/v1/jobs", json=job_body(model_name="blocker", training={"epochs": 400, "batch_size": 4})).json()["id"]
        wait_for(lambda: _state(client, blocker)["epoch"] >= 1, what="the blocking job to train")
        user = client.post("/v1/jobs", json={
            "model_name": "iris-in-use",
            "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 3, "activation": "softmax"}]},
            "data": {"dataset": dataset_id, "validation_split": 0.1},
            "training": {"loss": "sparse_categorical_crossentropy", "epochs": 400, "batch_size": 1},
        })  # fmt: skip
        assert user.status_code == 202, user.text
        user_id = user.json()["id"]
        _refused_delete(client, dataset_id)
        assert _state(client, user_id)["state"] == "queued"  # it was queued all along
        client.post(f"/v1/jobs/{blocker}/cancel")
        wait_for(lambda: _state(client, user_id)["epoch"] >= 1, what="the dataset's job to start", timeout=120)
        _refused_delete(client, dataset_id)
        assert _state(client, user_id)["state"] == "running"
        client.post(f"/v1/jobs/{user_id}/cancel")
        assert wait_for_job(client, f"/v1/jobs/{user_id}")["state"] == "cancelled"
        assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204  # nothing uses it any more
        assert client.get(f"/v1/datasets/{dataset_id}").status_code == 404
