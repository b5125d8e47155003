"""`/v1/studies` over HTTP on the embedded defaults (a real SQLite registry and kombu's SQLite broker), no worker:
what is recorded and queued, the 4xx answers, scopes, the event stream and the trial counter."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, admin_headers, embedded_settings, kiln_client
from tests.integration.test_api import _queued_task_args
from tests.integration.test_studies import study_body


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with kiln_client(embedded_settings(tmp_path)) as c:
        yield c


def test_a_study_is_a_202_with_its_first_trials_queued_as_jobs(client: TestClient) -> None:
    response = client.post("/v1/studies", json=study_body(parallelism=2, max_trials=2))
    assert response.status_code == 202, response.text
    study = response.json()
    assert response.headers["location"] == f"/v1/studies/{study['id']}"
    assert (study["state"], study["trials_started"], study["max_trials"], study["best"]) == ("running", 2, 2, None)
    assert study["objective"] == {"metric": "val_accuracy", "direction": "maximize"}
    assert [t["state"] for t in study["trials"]] == ["running", "running"]
    job_ids = [t["job_id"] for t in study["trials"]]
    assert sorted(args[0] for args in _queued_task_args(client, "cpu")) == sorted(job_ids)
    for number, job_id in enumerate(job_ids):
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert (job["study_id"], job["trial_number"], job["state"]) == (study["id"], number, "queued")
    chosen = sorted(t["params"]["training.optimizer.learning_rate"] for t in study["trials"])
    assert chosen == sorted([0.01, 1e-7])  # the grid: each point once
    assert client.get(f"/v1/studies/{study['id']}").json()["trials"] == study["trials"]
    listed = client.get("/v1/studies").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == study["id"]
    assert client.get("/v1/studies?state=succeeded").json()["count"] == 0


def test_the_example_study_is_accepted_as_it_is(client: TestClient) -> None:
    example = json.loads((ROOT / "examples" / "study_digits.json").read_text())
    response = client.post("/v1/studies", json=example)
    assert response.status_code == 202, response.text
    study = response.json()
    assert study["trials_started"] == 4 and len({json.dumps(t["params"], sort_keys=True) for t in study["trials"]}) == 4


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"search_space": {"training.optimizer.nope": {"type": "float", "low": 0.1, "high": 0.2}}, "sampler": "tpe"},
         "search_space.training.optimizer.nope"),
        ({"search_space": {"model.layers[0].units": {"type": "int", "low": 0, "high": 8}}}, "search_space.model.layers[0].units"),
        ({"objective": {"metric": "val_mae"}}, "objective.metric"),
        ({"sampler": "grid", "search_space": {"training.optimizer.learning_rate": {"type": "float", "low": 0.1, "high": 0.2}}},
         "body"),
        ({"search_space": {"training.batch_size": {"type": "int", "low": 64, "high": 16}}}, "search_space.training.batch_size.int"),
        ({"parallelism": 0}, "parallelism"),
        ({"job": {"model_name": "x"}}, "job.model"),
        ({"sampler": "bayes"}, "sampler.type"),
    ],
)  # fmt: skip
def test_bad_studies_are_422s_naming_the_field(client: TestClient, change: dict[str, Any], field: str) -> None:
    response = client.post("/v1/studies", json=study_body(**change))
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]] if "details" in response.json()["error"] else []
    assert field in [response.json()["error"].get("field"), *fields], response.json()
    assert client.get("/v1/studies").json()["count"] == 0
    assert client.get("/v1/jobs").json()["count"] == 0


def test_unknown_studies_are_404s_and_a_finished_one_cannot_be_cancelled(client: TestClient) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for response in (client.get(f"/v1/studies/{missing}"), client.post(f"/v1/studies/{missing}/cancel"),
                     client.get(f"/v1/studies/{missing}/events")):  # fmt: skip
        assert response.status_code == 404 and response.json()["error"]["field"] == "study_id"
    study = client.post("/v1/studies", json=study_body()).json()
    cancelled = client.post(f"/v1/studies/{study['id']}/cancel")
    assert cancelled.status_code == 202
    body = cancelled.json()
    assert body["state"] == "cancelled" and [t["state"] for t in body["trials"]] == ["cancelled", "cancelled"]
    for trial in body["trials"]:
        assert client.get(f"/v1/jobs/{trial['job_id']}").json()["state"] == "cancelled"
    again = client.post(f"/v1/studies/{study['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["field"] == "study_id"
    metrics = client.get("/metrics").text
    assert 'kiln_study_trials_total{outcome="cancelled"} 2.0' in metrics


def test_the_event_stream_gives_each_trial_then_the_end(client: TestClient) -> None:
    study = client.post("/v1/studies", json=study_body()).json()
    client.post(f"/v1/studies/{study['id']}/cancel")
    with client.stream("GET", f"/v1/studies/{study['id']}/events") as stream:
        text = "".join(stream.iter_text())
    events = [(block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1].removeprefix("data: ")))
              for block in text.strip().split("\n\n")]  # fmt: skip
    assert [name for name, _ in events] == ["trial", "trial", "state", "end"]
    assert [data["number"] for _, data in events[:2]] == [0, 1]
    assert events[2][1]["state"] == "cancelled" and events[3][1]["id"] == study["id"]


def test_creating_and_cancelling_need_train_and_reading_needs_read(client: TestClient, tmp_path: Path) -> None:
    settings = client.app.state.kiln.settings
    reader = admin_headers(settings.database_url, scopes=("read",))
    trainer = admin_headers(settings.database_url, scopes=("train",))
    assert client.post("/v1/studies", json=study_body(), headers=reader).status_code == 403
    study = client.post("/v1/studies", json=study_body(), headers=trainer)
    assert study.status_code == 202
    assert client.get(f"/v1/studies/{study.json()['id']}", headers=reader).status_code == 200
    assert client.post(f"/v1/studies/{study.json()['id']}/cancel", headers=reader).status_code == 403
    assert client.get("/v1/studies", headers={"Authorization": "Bearer not-a-key"}).status_code == 401


def test_a_dataset_a_running_study_trains_on_cannot_be_deleted(client: TestClient) -> None:
    from tests.datasets_factory import iris_csv

    dataset = client.post("/v1/datasets", files={"file": ("iris.csv", iris_csv())}, data={"target": "species"}).json()
    job = {"model_name": "iris-study", "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 3, "activation": "softmax"}]},
           "data": {"dataset": dataset["id"].upper(), "validation_split": 0.2},
           "training": {"loss": "sparse_categorical_crossentropy", "epochs": 2}}  # fmt: skip
    study = client.post("/v1/studies", json=study_body(job=job, parallelism=1)).json()
    assert study["spec"]["job"]["data"]["dataset"] == dataset["id"]  # named by its canonical id, as jobs name it
    client.post(f"/v1/jobs/{study['trials'][0]['job_id']}/cancel")  # no job of it is queued or running now
    refused = client.delete(f"/v1/datasets/{dataset['id']}")
    assert refused.status_code == 409 and "running study" in refused.json()["error"]["message"]
    client.post(f"/v1/studies/{study['id']}/cancel")
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204


def test_a_study_whose_dataset_went_away_starts_no_more_trials(client: TestClient) -> None:
    from api.routers.studies import _terms
    from services.usecases.studies import advance_study
    from tests.datasets_factory import iris_csv

    dataset = client.post("/v1/datasets", files={"file": ("iris.csv", iris_csv())}, data={"target": "species"}).json()
    job = {"model_name": "iris-study", "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 3, "activation": "softmax"}]},
           "data": {"dataset": dataset["id"], "validation_split": 0.2},
           "training": {"loss": "sparse_categorical_crossentropy", "epochs": 2}}  # fmt: skip
    study = client.post("/v1/studies", json=study_body(job=job, parallelism=1, max_trials=2)).json()
    client.post(f"/v1/jobs/{study['trials'][0]['job_id']}/cancel")
    kiln = client.app.state.kiln
    with kiln.uow_factory() as uow:  # gone behind Kiln's back (an older Kiln let a running study's upload be deleted)
        uow.datasets.delete(uuid.UUID(dataset["id"]))
        uow.commit()
    advance_study(uuid.UUID(study["id"]), _terms(kiln))
    after = client.get(f"/v1/studies/{study['id']}").json()
    assert after["state"] == "failed" and after["trials_started"] == 1
    assert "what its job needs is gone (data.dataset" in after["error"] and "no trial completed (1 cancelled)" in after["error"]
