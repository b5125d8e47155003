"""Past one machine (issue 19): what the S3 store and multi-process training cost or save, each against its baseline.

- **Predict p50 from a warm cache:** an API serving a version whose ONNX file came from S3 (a real SeaweedFS on
  loopback), against the same with the local store. The target is a ratio of 1: once loaded, S3 is out of the path.
  The first predict of a fresh API (the file fetched from S3 and checked, or read from disk) is shown beside it.
- **Job wall time:** POST -> succeeded of examples/digits_mlp.json with the S3 store against the local store, both on
  PostgreSQL + Redis, the worker and the API on folders of their own for S3 (all they share is the bucket).
- **Epoch time with 2 gloo processes against 1** on this machine (bench/scale_ddp.py); with 2 GPUs or more, NCCL too.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import scale_ddp  # noqa: E402
from services.data.builtins import load_builtin  # noqa: E402
from tests.conftest import REDIS_URL, free_port, migrate, postgres_database  # noqa: E402
from tests.e2e.helpers import api_command, kiln_env, mint_key, spawn, stop, wait_for_job, wait_until_ready  # noqa: E402
from tests.s3_server import WeedServer  # noqa: E402

JOBS, PREDICTS = 3, 400
DIGITS = json.loads((ROOT / "examples" / "digits_mlp.json").read_text())


def _api(env: dict[str, str], folder: Path, *, own_cache: bool) -> tuple[Any, str]:
    """An API process; with `own_cache` (S3), artifacts fetched into a folder of its own, else the shared local store."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = spawn(api_command(port), env | ({"KILN_ARTIFACT_DIR": str(folder / "artifacts")} if own_cache else {}), folder / "api.log")
    return proc, f"http://127.0.0.1:{port}"


def _predict_ms(url: str, headers: dict[str, str], rows: list[list[float]]) -> tuple[float, float]:
    """The first predict's latency, then the median of PREDICTS more, in ms."""
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        times = []
        for _ in range(PREDICTS + 1):
            started = time.perf_counter()
            answer = client.post("/v1/models/digits-mlp/predict", json={"inputs": rows})
            times.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, answer.text
    return times[0], statistics.median(times[1:])


def through(label: str, database_url: str, tmp: Path, **settings: str) -> dict[str, float]:
    """Job wall times, then a fresh API's first and warm predicts, on one store."""
    tmp.mkdir(parents=True)
    env = kiln_env(data_dir=str(tmp), database_url=database_url, broker_url=REDIS_URL, **settings)
    migrate(database_url)
    headers = mint_key(env)
    own = "artifact_url" in settings  # on S3, the hosts share nothing but the bucket; on local disk, the folder
    folders = {f"KILN_{n}_DIR": str(tmp / "worker" / n.lower()) for n in ("ARTIFACT", "DATASET", "CHECKPOINT")} if own else {}
    worker = spawn([sys.executable, "-m", "worker"], env | folders, tmp / "worker.log")
    api, url = _api(env, tmp / "api", own_cache=own)
    procs = [api, worker]
    try:
        wait_until_ready(url, procs, [tmp / "api" / "api.log", tmp / "worker.log"])
        walls = []
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            for _ in range(JOBS):
                started = time.perf_counter()
                job = wait_for_job(client, client.post("/v1/jobs", json=DIGITS).headers["location"], timeout=300)
                walls.append(time.perf_counter() - started)
                assert job["state"] == "succeeded", job["error"]
        fresh, fresh_url = _api(env, tmp / "fresh-api", own_cache=own)  # a replica that has loaded nothing yet
        procs.append(fresh)
        wait_until_ready(fresh_url, [fresh, worker], [tmp / "fresh-api" / "api.log", tmp / "worker.log"])
        first_ms, warm_ms = _predict_ms(fresh_url, headers, load_builtin("digits").x_test[:1].tolist())
    finally:
        for proc in procs:
            stop(proc)
    figures = {"job_wall_s": statistics.median(walls), "first_predict_ms": first_ms, "warm_predict_p50_ms": warm_ms}
    print(f"{label}: job wall {figures['job_wall_s']:.2f} s (median of {JOBS}); fresh API first predict {first_ms:.1f} ms, "
          f"then p50 {warm_ms:.2f} ms over {PREDICTS}", flush=True)  # fmt: skip
    return figures


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = WeedServer(root / "s3")
        server.start()
        try:
            os.environ.update({name: value for name, value in server.env.items() if name.startswith("AWS_")})
            with postgres_database("kiln_bench") as local_db, postgres_database("kiln_bench") as s3_db:
                local = through("local store (baseline)", local_db, root / "local")
                s3 = through("S3 store (SeaweedFS)", s3_db, root / "s3run", artifact_url=f"s3://{server.new_bucket()}/bench",
                             s3_endpoint_url=server.endpoint)  # fmt: skip
        finally:
            server.stop()
    print(f"predict p50 from a warm cache, S3 / local: {s3['warm_predict_p50_ms'] / local['warm_predict_p50_ms']:.2f}x "
          f"(target 1: the cache hides S3)")  # fmt: skip
    print(f"a fresh API's first predict, S3 / local: {s3['first_predict_ms'] / local['first_predict_ms']:.2f}x")
    print(f"job wall time, S3 / local: {s3['job_wall_s'] / local['job_wall_s']:.2f}x")
    for backend, figures in scale_ddp.measure().items():
        n = figures["processes"]
        print(f"{backend}: {figures['example']} epoch with {n} processes {figures[f'epoch_s_{n}'] * 1000:.0f} ms against 1 process "
              f"{figures['epoch_s_1'] * 1000:.0f} ms: ratio {figures['ratio']:.2f} (1/{n} is perfect scaling)")  # fmt: skip


if __name__ == "__main__":
    main()
