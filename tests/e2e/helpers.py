"""Start Kiln's real processes for end-to-end tests and drive them over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from services.data.builtins import load_builtin
from tests.conftest import QUEUE_PREFIX, ROOT, free_port
from tests.factories import DIGITS_MLP

FINAL_STATES = {"succeeded", "failed", "cancelled"}


def kiln_env(**values: str) -> dict[str, str]:
    """This environment without any KILN_ variable of the caller's, plus `values`."""
    # Queues of its own for each set of processes (they may share one Redis with another set), and no
    # worker /metrics port unless a test asks for one: several workers may run at once.
    own = {"KILN_QUEUE_PREFIX": f"{QUEUE_PREFIX}{uuid.uuid4().hex[:6]}-", "KILN_WORKER_METRICS_PORT": "0"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")} | own
    return env | {f"KILN_{k.upper()}": v for k, v in values.items()}


def mint_key(env: dict[str, str], scopes: str = "admin") -> dict[str, str]:
    """A key minted with `kiln-admin create-key` on the registry `env` names, as request headers."""
    made = subprocess.run([sys.executable, "-m", "api.cli", "create-key", "--scopes", scopes], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return {"Authorization": f"Bearer {made.stdout.strip()}"}


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def wait_until_ready(base_url: str, procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 90) -> None:
    """Until the API is ready and a worker has announced itself (so timings exclude start-up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, f"process exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200 and _worker_listening(logs):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base_url} never became ready:\n" + "\n".join(p.read_text()[-2000:] for p in logs))


def _worker_listening(logs: list[Path]) -> bool:
    # A pool child logs this once it has warmed torch up and announced the worker (Celery's own "ready." comes before).
    return any("ready to train on" in log.read_text(errors="replace") for log in logs)


def wait_for_job(client: httpx.Client, location: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(location).json()
        if job["state"] in FINAL_STATES:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job did not finish in {timeout}s: {job}")


def job_now(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return client.get(f"/v1/jobs/{job_id}").json()


def wait_job_until(client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
    """The job as soon as `until(job)` holds, polled every 50 ms."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_now(client, job_id)
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job never reached the expected point: {job}")


def one_version_each(client: httpx.Client, jobs: list[dict[str, Any]]) -> None:
    """Every job registered exactly one version, each with its artifact."""
    for name in {j["model_name"] for j in jobs}:
        versions = client.get(f"/v1/models/{name}/versions").json()["data"]
        mine = [v for v in versions if v["job_id"] in {j["id"] for j in jobs}]
        assert sorted(v["job_id"] for v in mine) == sorted(j["id"] for j in jobs if j["model_name"] == name)
        for v in mine:
            assert client.get(f"/v1/models/{name}/versions/{v['version']}/artifact").status_code == 200


def api_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1", "--port", str(port)]


def spawn_api(env: dict[str, str], log: Path, attempts: int = 3) -> tuple[subprocess.Popen[bytes], int]:
    """uvicorn on a free port, drawn again when another process bound it first (the one race a free port leaves)."""
    proc, (port,) = spawn_on_free_ports(lambda port: spawn(api_command(port), env, log), log,
                                        ready=lambda port: answers(f"http://127.0.0.1:{port}/healthz"), attempts=attempts)  # fmt: skip
    return proc, port


def spawn_on_free_ports(start: Callable[..., subprocess.Popen[bytes]], log: Path, *, ready: Callable[..., bool], ports: int = 1,
                        attempts: int = 3, timeout: float = 90) -> tuple[subprocess.Popen[bytes], tuple[int, ...]]:  # fmt: skip
    """`start(*ports)` on `ports` free ports, drawn again when another process bound one first (the one race a free port leaves).

    Returns once `ready(*ports)` is true, the process ended for another reason (the caller's own wait reports it), or `timeout`.
    """
    for _ in range(attempts):
        drawn = tuple(free_port() for _ in range(ports))
        proc = start(*drawn)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline and not ready(*drawn) and not _port_taken(log):
            time.sleep(0.2)
        if not _port_taken(log):
            return proc, drawn
        stop(proc)  # a port was taken: this attempt may still be running without it
    raise AssertionError(f"every port drawn was taken: {log.read_text(errors='replace')[-2000:]}")


def start_make_run(var: Path, log: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """scripts/run_local.py, as `make run` starts it, on the data folder `var` and a port of its own, in a process group of
    its own (as a terminal's foreground job); returns once the API is ready and a worker has announced itself."""
    proc, (port,) = spawn_on_free_ports(
        lambda port: spawn([sys.executable, "scripts/run_local.py"], kiln_env(data_dir=str(var), port=str(port), **env), log),
        log, ready=lambda port: answers(f"http://127.0.0.1:{port}/readyz"))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, [proc], [log])
    except BaseException:
        stop(proc, sig=signal.SIGINT, timeout=60)
        raise
    return proc, url


def _port_taken(log: Path) -> bool:
    """A bind failure in the log (a process may log one and keep running, as a worker without its metrics port does)."""
    return "address already in use" in log.read_text(errors="replace").lower()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def train_digits_and_predict(base_url: str, headers: dict[str, str]) -> dict[str, Any]:
    """POST examples/digits_mlp.json, wait for it, predict the held-out test split over HTTP."""
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
        started = time.monotonic()
        response = client.post("/v1/jobs", json=DIGITS_MLP)
        assert response.status_code == 202, response.text
        job = wait_for_job(client, response.headers["location"])
        wall_s = time.monotonic() - started
        assert job["state"] == "succeeded", job["error"]
        assert job["epoch"] == 20 and [e["epoch"] for e in job["history"]] == list(range(1, 21))
        test = load_builtin("digits")
        predicted = client.post(f"/v1/models/digits-mlp/versions/{job['version']}/predict", json={"inputs": test.x_test.tolist()})
        assert predicted.status_code == 200, predicted.text
        body = predicted.json()
        outputs = np.asarray(body["outputs"])
        assert outputs.shape == (len(test.x_test), 10)
        np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-5)  # probabilities, not logits
        version = client.get(f"/v1/models/digits-mlp/versions/{job['version']}").json()
        return {
            "job": job,
            "version": version,
            "wall_s": wall_s,
            "accuracy": float((outputs.argmax(axis=1) == test.y_test).mean()),
        }


def job_events(base_url: str, job_id: str, headers: dict[str, str], timeout: float = 120) -> list[tuple[str, dict[str, Any]]]:
    """Every Server-Sent Event of a job's stream, until the server closes it."""
    events, name = [], ""
    with httpx.stream("GET", f"{base_url}/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def check_event_stream(events: list[tuple[str, dict[str, Any]]], epochs: int) -> None:
    """Epochs 1..n in order, states in order, and a final `end` carrying the finished job."""
    assert [data["epoch"] for name, data in events if name == "epoch"] == list(range(1, epochs + 1))
    states = [data["state"] for name, data in events if name == "state"]
    assert states[-1] == "succeeded" and states == sorted(set(states), key=states.index)
    assert events[-1][0] == "end" and events[-1][1]["state"] == "succeeded" and len(events[-1][1]["history"]) == epochs
