"""End to end on the embedded defaults, started exactly as `make run` starts them (scripts/run_local.py)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.helpers import (
    check_event_stream,
    job_events,
    start_make_run,
    stop,
    train_digits_and_predict,
    wait_for_job,
)
from tests.factories import job_body


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") == -1
    except FileNotFoundError:
        return False


def _make_run(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`make run` on a data folder and port of its own; returns once it is ready."""
    log = tmp_path / "run.log"
    proc, url = start_make_run(tmp_path / "var", log, **env)
    return proc, url, log


def test_make_run_trains_serves_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc, url, log = _make_run(tmp_path)
    port = url.rsplit(":", 1)[1]
    try:
        children = _children(proc.pid)
        assert len(children) == 2  # the API and the worker
        key_file = tmp_path / "var" / "api-key"
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # minted and kept private
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401  # auth is on
        headers = {"Authorization": f"Bearer {key}"}
        result = train_digits_and_predict(url, headers)
        check_event_stream(job_events(url, result["job"]["id"], headers), epochs=20)  # a finished job's stream replays it
        print(f"\n[e2e embedded] wall {result['wall_s']:.2f}s, test accuracy {result['accuracy']:.4f}")
        assert result["accuracy"] >= 0.95
        assert (tmp_path / "var" / "kiln.db").exists() and (tmp_path / "var" / "broker.db").exists()
        assert f"Kiln is running at http://127.0.0.1:{port}" in log.read_text() and key in log.read_text()  # and printed
    finally:
        code = stop(proc, sig=signal.SIGINT, timeout=120)  # raises if Ctrl-C did not end it: no wall-clock figure asserted
    assert code == 0, log.read_text()[-3000:]
    assert not [c for c in children if _alive(c)]
    try:
        httpx.get(f"{url}/healthz", timeout=1)
        raise AssertionError("the API still answers after Ctrl-C")
    except httpx.TransportError:
        pass


def test_make_run_restarts_a_dead_worker_and_the_job_it_held_resumes(tmp_path: Path) -> None:
    proc, url, log = _make_run(tmp_path, job_heartbeat_s="0.5", job_stale_after_s="3", sweep_interval_s="0.5")
    headers = {"Authorization": f"Bearer {(tmp_path / 'var' / 'api-key').read_text().strip()}"}
    try:
        api, worker = _children(proc.pid)  # started in this order
        with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
            body = job_body(model_name="slow", training={"epochs": 30, "batch_size": 4})
            location = client.post("/v1/jobs", json=body).headers["location"]
            while client.get(location).json()["epoch"] < 3:
                time.sleep(0.05)
            os.killpg(worker, signal.SIGKILL)  # the worker and its pool child, mid-epoch, on SQLite and the SQLite broker
            deadline = time.monotonic() + 30
            while worker in _children(proc.pid) or len(_children(proc.pid)) < 2:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.2)
            assert api in _children(proc.pid)
            job = wait_for_job(client, location)
        assert job["state"] == "succeeded" and job["attempt"] == 2, job["error"]
        assert [e["epoch"] for e in job["history"]] == list(range(1, 31))
        assert "restarting it" in log.read_text()
    finally:
        assert stop(proc, sig=signal.SIGINT, timeout=60) == 0
