"""A bounded mixed load on loopback: predictions (wrk) and job submissions (a client thread) at once.

Production shape: PostgreSQL, Redis, the API and a worker as real processes, with an API key.
After a warm-up, it measures for `--seconds` and reports errors (any non-2xx answer, socket error
or job that does not succeed) and the API's and the worker's resident memory growth over the
measured part. Targets: zero errors, RSS growth under 10%.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402
from bench.serve import MLP, onnx_file  # noqa: E402
from tests.conftest import REDIS_URL, free_port, migrate, postgres_database  # noqa: E402
from tests.e2e.helpers import api_command, kiln_env, mint_key, rss_mib, spawn, stop, wait_until_ready  # noqa: E402
from tests.factories import tiny_job  # noqa: E402


@dataclass
class Jobs:
    submitted: int = 0
    succeeded: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadReport:
    predict: wrk.Load
    jobs: Jobs
    rss_mib: dict[str, tuple[float, float]]  # process -> (after warm-up, after the measured load)

    @property
    def errors(self) -> int:
        """Every request or job that did not succeed (a job that failed is in jobs.errors too)."""
        return self.predict.errors + max(len(self.jobs.errors), self.jobs.submitted - self.jobs.succeeded)

    def growth(self, process: str) -> float:
        before, after = self.rss_mib[process]
        return after / before - 1


def tree_rss_mib(pid: int) -> float:
    """A process and its children (the worker's pool child trains): resident memory summed."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return rss_mib(pid) + sum(tree_rss_mib(c) for c in children)


def submit_jobs(client: httpx.Client, until: float, every_s: float, jobs: Jobs) -> None:
    """A job every `every_s` until `until`, then wait for every one to end; a job list read each time too."""
    pending = []
    while time.monotonic() < until:
        response = client.post("/v1/jobs", json=tiny_job(model_name="loaded"))
        jobs.submitted += 1
        if response.status_code != 202:
            jobs.errors.append(f"POST /v1/jobs {response.status_code}: {response.text[:200]}")
        else:
            pending.append(response.headers["location"])
        if client.get("/v1/jobs", params={"limit": 20}).status_code != 200:
            jobs.errors.append("GET /v1/jobs failed")
        time.sleep(every_s)
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline:
        job = client.get(pending[0]).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            pending.pop(0)
            if job["state"] == "succeeded":
                jobs.succeeded += 1
            else:
                jobs.errors.append(f"job {job['id']} {job['state']}: {job['error']}")
        else:
            time.sleep(0.1)
    jobs.errors += [f"job {p} did not finish" for p in pending]


def run(seconds: int, *, warmup_s: int = 10, connections: int = 16, job_every_s: float = 0.5) -> LoadReport:
    with tempfile.TemporaryDirectory() as name, postgres_database("kiln_load") as database_url:
        tmp = Path(name)
        migrate(database_url)
        env = kiln_env(data_dir=str(tmp), database_url=database_url, broker_url=REDIS_URL)
        headers = mint_key(env)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        logs = [tmp / "api.log", tmp / "worker.log"]
        api = spawn(api_command(port) + ["--no-access-log"], env | {"KILN_LOG_LEVEL": "warning"}, logs[0])
        worker = spawn([sys.executable, "-m", "worker"], env, logs[1])
        try:
            wait_until_ready(url, [api, worker], logs)
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                files = {"file": ("mlp.onnx", onnx_file(MLP, tmp / "mlp.onnx").read_bytes())}
                assert client.post("/v1/models/digits/versions", files=files).status_code == 201
                row = np.random.default_rng(0).random((1, 64), dtype=np.float32) * 16
                body = json.dumps({"inputs": row.tolist()}).encode()
                predict_url = f"{url}/v1/models/digits/versions/1/predict"
                request_headers = {"Content-Type": "application/json"} | headers
                warm = Jobs()  # the same mix, unmeasured: sessions, pools and allocator arenas settle
                thread = threading.Thread(target=submit_jobs, args=(client, time.monotonic() + warmup_s, job_every_s, warm))
                thread.start()
                wrk.run(predict_url, body, headers=request_headers, connections=connections, seconds=warmup_s, threads=2)
                thread.join()
                before = {"api": rss_mib(api.pid), "worker": tree_rss_mib(worker.pid)}
                jobs = Jobs()
                thread = threading.Thread(target=submit_jobs, args=(client, time.monotonic() + seconds, job_every_s, jobs))
                thread.start()
                predicted = wrk.run(predict_url, body, headers=request_headers, connections=connections, seconds=seconds, threads=2)
                thread.join()
                after = {"api": rss_mib(api.pid), "worker": tree_rss_mib(worker.pid)}
        finally:
            stop(api)
            stop(worker)
    return LoadReport(predicted, jobs, {k: (before[k], after[k]) for k in before})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    report = run(args.seconds)
    p = report.predict
    print(f"mixed load on loopback for {args.seconds} s, after a 10 s warm-up (16 predict connections, a job every 0.5 s)")
    print(
        f"  predict: {p.requests} requests, {p.requests_per_s:.0f} req/s, p50 {p.p50_ms:.2f} ms, p99 {p.p99_ms:.2f} ms, errors {p.errors}"
    )
    print(f"  jobs: {report.jobs.submitted} submitted, {report.jobs.succeeded} succeeded, errors {report.jobs.errors[:5]}")
    for process, (before, after) in report.rss_mib.items():
        print(f"  {process} RSS {before:.0f} -> {after:.0f} MiB: growth {report.growth(process) * 100:+.1f}% (target < 10%)")
    print(f"  errors in all: {report.errors} (target 0)")
    sys.exit(0 if report.errors == 0 and all(report.growth(k) < 0.10 for k in report.rss_mib) else 1)


if __name__ == "__main__":
    main()
