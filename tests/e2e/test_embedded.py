"""End to end on the embedded defaults, started exactly as `make run` starts them (scripts/run_local.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.helpers import (
    check_event_stream,
    job_events,
    kiln_env,
    spawn,
    stop,
    train_digits_and_predict,
    wait_for_job,
    wait_until_ready,
)
from tests.factories import tiny_job


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


def _make_run(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """scripts/run_local.py, as `make run` starts it, on a data folder and port of its own; returns once it is ready."""
    port, log = free_port(), tmp_path / "run.log"
    proc = spawn([sys.executable, "scripts/run_local.py"], kiln_env(data_dir=str(tmp_path / "var"), port=str(port)), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, [proc], [log])
    except BaseException:
        stop(proc, sig=signal.SIGINT, timeout=60)
        raise
    return proc, url, log


def test_make_run_trains_serves_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc, url, log = _make_run(tmp_path)
    port = url.rsplit(":", 1)[1]
    try:
        children = _children(proc.pid)
        assert len(children) == 2  # the API and the worker
        result = train_digits_and_predict(url)
        check_event_stream(job_events(url, result["job"]["id"]), epochs=20)  # a finished job's stream replays it
        print(f"\n[e2e embedded] wall {result['wall_s']:.2f}s, test accuracy {result['accuracy']:.4f}")
        assert result["accuracy"] >= 0.95
        assert (tmp_path / "var" / "kiln.db").exists() and (tmp_path / "var" / "broker.db").exists()
        assert f"Kiln is running at http://127.0.0.1:{port}" in log.read_text()
    finally:
        started = time.monotonic()
        code = stop(proc, sig=signal.SIGINT, timeout=60)
    assert code == 0, log.read_text()[-3000:]
    assert time.monotonic() - started < 30
    assert not [c for c in children if _alive(c)]
    try:
        httpx.get(f"{url}/healthz", timeout=1)
        raise AssertionError("the API still answers after Ctrl-C")
    except httpx.TransportError:
        pass


def test_make_run_restarts_a_worker_that_dies(tmp_path: Path) -> None:
    proc, url, log = _make_run(tmp_path)
    try:
        api, worker = _children(proc.pid)  # started in this order
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while worker in _children(proc.pid) or len(_children(proc.pid)) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        assert api in _children(proc.pid)
        with httpx.Client(base_url=url, timeout=30) as client:  # the new worker takes jobs
            job = wait_for_job(client, client.post("/v1/jobs", json=tiny_job()).headers["location"])
        assert job["state"] == "succeeded", job["error"]
        assert "restarting it" in log.read_text()
    finally:
        assert stop(proc, sig=signal.SIGINT, timeout=60) == 0
