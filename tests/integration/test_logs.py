"""One structured line per request and per job event; X-Request-ID kept and echoed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import embedded_settings, kiln_client


def _lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_json_request_lines_carry_the_request_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with kiln_client(embedded_settings(tmp_path, log_format="json")) as client:
        kept = client.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers={"X-Request-ID": "req-42"})
        made = client.get("/healthz", headers={"X-Request-ID": "not a valid id!"})
    assert kept.headers["x-request-id"] == "req-42"
    assert made.headers["x-request-id"] != "not a valid id!" and len(made.headers["x-request-id"]) > 8
    lines = [line for line in _lines(capsys.readouterr().err) if line.get("logger") == "kiln.request"]
    (line,) = [entry for entry in lines if entry["request_id"] == "req-42"]
    assert (line["method"], line["route"], line["status"]) == ("GET", "/v1/jobs/{job_id}", 404) and line["duration_ms"] > 0
    assert any(entry["request_id"] == made.headers["x-request-id"] and entry["route"] == "/healthz" for entry in lines)


def test_text_logs_are_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with kiln_client(embedded_settings(tmp_path)) as client:
        client.get("/healthz", headers={"X-Request-ID": "r-1"})
    err = capsys.readouterr().err
    assert "INFO kiln.request: GET /healthz 200" in err and "request_id=r-1" in err and not err.lstrip().startswith("{")
