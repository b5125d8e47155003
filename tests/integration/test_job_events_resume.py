"""A job's event stream on the embedded defaults (a real SQLite registry), no worker: a reconnecting client's
Last-Event-ID, read as the last epoch sent, and one that is no such id."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.registry.entities import EpochRecord
from services.registry.unit_of_work import connect_registry
from tests.conftest import embedded_settings, kiln_client
from tests.factories import tiny_job


@pytest.fixture
def ended(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """A job with four recorded epochs, cancelled while queued (so its stream ends)."""
    with kiln_client(embedded_settings(tmp_path)) as client:
        job_id = client.post("/v1/jobs", json=tiny_job()).json()["id"]
        engine, uow_factory = connect_registry(client.app.state.kiln.settings.database_url)
        with uow_factory() as uow:
            for epoch in (1, 2, 3, 4):
                uow.jobs.add_epoch(uuid.UUID(job_id), EpochRecord(epoch, 1.0 / epoch, None, {"loss": 1.0 / epoch}, 0.01))
            uow.commit()
        engine.dispose()
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202)
        yield client, job_id


def _events(client: TestClient, job_id: str, last_event_id: str | None) -> list[tuple[str, str]]:
    headers = {"Last-Event-ID": last_event_id.encode("latin-1")} if last_event_id is not None else {}  # "²" as a header's byte
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as stream:
        assert stream.status_code == 200
        lines = [line for line in stream.iter_lines() if line.startswith(("id:", "event:"))]
    return list(
        zip((line.removeprefix("id: ") for line in lines[::2]), (line.removeprefix("event: ") for line in lines[1::2]), strict=True)
    )


def test_a_reconnecting_client_gets_the_epochs_after_its_last_event_and_the_end(ended: tuple[TestClient, str]) -> None:
    client, job_id = ended
    assert _events(client, job_id, "2.0.queued") == [("3.0.queued", "epoch"), ("4.0.queued", "epoch"),
                                                     ("4.0.cancelled", "state"), ("4.0.cancelled", "end")]  # fmt: skip
    whole = _events(client, job_id, None)
    assert [name for _, name in whole] == ["epoch"] * 4 + ["state", "end"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:  # the end event still carries the whole job
        end = json.loads([line for line in stream.iter_lines() if line.startswith("data:")][-1].removeprefix("data: "))
    assert [e["epoch"] for e in end["history"]] == [1, 2, 3, 4] and end["state"] == "cancelled"


@pytest.mark.parametrize("last_event_id", ["99999999999999999999.0.running", "3000000000.0.running", "².0.running", "x.y.z", "1.0"])
def test_an_id_that_is_no_event_of_ours_streams_from_the_start(ended: tuple[TestClient, str], last_event_id: str) -> None:
    """Too big for SQL's INTEGER, not ASCII digits, malformed: the stream starts over, it does not break."""
    client, job_id = ended
    assert [name for _, name in _events(client, job_id, last_event_id)] == ["epoch"] * 4 + ["state", "end"]
