"""Serving benchmarks: every figure beside its baseline, measured in this run with the same load generator (wrk).

1. One client, one-row predict on the digits MLP (64 -> 64 -> 32 -> 10): p50 and p99 for Kiln, the
   20-line FastAPI + onnxruntime handler (bench/baseline_server.py), and onnxruntime in-process.
2. 64 clients, same model: requests per second for Kiln, the 20-line handler and `mlflow models serve`.
3. The seeds' CNN on (64, 64, 3) at 64 clients: dynamic batching on / off, and binary v2 tensors / JSON.
4. The API's resident memory with 20 digits-sized models loaded.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402
from services.spec import ModelSpec  # noqa: E402
from services.training.builder import build_network  # noqa: E402
from services.training.export import example_input, export_onnx  # noqa: E402
from tests.conftest import free_port, migrate  # noqa: E402
from tests.e2e.helpers import kiln_env, mint_key, rss_mib, spawn, stop  # noqa: E402

MLFLOW_VENV = ROOT / "var" / "mlflow-venv"
DENSE = {"type": "Dense"}
MLP = {"input_shape": [64], "layers": [DENSE | {"units": 64, "activation": "relu"}, DENSE | {"units": 32, "activation": "relu"},
                                        DENSE | {"units": 10, "activation": "softmax"}]}  # fmt: skip
CNN = {"input_shape": [64, 64, 3], "layers": [{"type": "Conv2D", "filters": 32, "kernel_size": 3, "activation": "relu"},
                                               {"type": "MaxPooling2D"}, {"type": "Flatten"}, DENSE | {"units": 128, "activation": "relu"},
                                               DENSE | {"units": 3, "activation": "softmax"}]}  # fmt: skip
JSON = {"Content-Type": "application/json"}
# Kiln's admin key, minted once its registry is migrated; every load generator sends it (the baselines ignore it),
# so requests are the same size everywhere and Kiln pays its key check in every figure.
AUTH: dict[str, str] = {}


def onnx_file(model: dict, path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    spec = ModelSpec.model_validate(model)
    export_onnx(build_network(spec, fuse_output_activation=True), example=example_input(tuple(spec.input_shape), "float32"), path=path)
    return path


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError(log.read_text()[-3000:])


def in_process_us(path: Path, row: np.ndarray, runs: int = 20_000) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: row}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def upload(url: str, name: str, path: Path) -> None:
    response = httpx.post(f"{url}/v1/models/{name}/versions", files={"file": (path.name, path.read_bytes())}, headers=AUTH,
                          timeout=60)  # fmt: skip
    assert response.status_code == 201, response.text


def ensure_mlflow() -> Path:
    """MLflow in a virtualenv of its own (its pins clash with Kiln's), made once under var/."""
    python = MLFLOW_VENV / "bin" / "python"
    if not (MLFLOW_VENV / "bin" / "mlflow").exists():
        subprocess.run(["python3.11", "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "mlflow==3.17.2", "onnx==1.23.2", "onnxruntime==1.32.0"], check=True)
    return python


def mlflow_server(model: Path, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    python = ensure_mlflow()
    saved = tmp / "mlflow-model"
    subprocess.run([str(python), "-c", f"import mlflow.onnx, onnx; mlflow.onnx.save_model(onnx.load({str(model)!r}), {str(saved)!r})"],
                   check=True, capture_output=True)  # fmt: skip
    env = {**os.environ, "PATH": f"{MLFLOW_VENV / 'bin'}:{os.environ['PATH']}"}
    log = tmp / "mlflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "-m", str(saved), "-p", str(port),
                                 "--env-manager", "local", "-w", "1"], env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/ping", proc, log)
    return proc


def line(label: str, load: wrk.Load) -> str:
    return f"  {label:44s} p50 {load.p50_ms:7.3f} ms  p99 {load.p99_ms:7.3f} ms  {load.requests_per_s:9.0f} req/s  errors {load.errors}"


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        mlp, cnn = onnx_file(MLP, tmp / "mlp.onnx"), onnx_file(CNN, tmp / "cnn.onnx")
        kiln_port, base_port, mlflow_port = free_port(), free_port(), free_port()
        env = kiln_env(data_dir=str(tmp / "kiln"))
        (tmp / "kiln").mkdir()
        migrate(f"sqlite:///{tmp / 'kiln' / 'kiln.db'}")
        AUTH.update(mint_key(env))
        procs = [
            spawn([sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", str(kiln_port), "--no-access-log"],
                  env, tmp / "kiln.log"),
            spawn([sys.executable, "-m", "uvicorn", "bench.baseline_server:app", "--port", str(base_port), "--no-access-log"],
                  env | {"KILN_BENCH_MODEL": str(mlp)}, tmp / "baseline.log"),
        ]  # fmt: skip
        kiln, base = f"http://127.0.0.1:{kiln_port}", f"http://127.0.0.1:{base_port}"
        try:
            wait_http(f"{kiln}/healthz", procs[0], tmp / "kiln.log")
            wait_http(f"{base}/docs", procs[1], tmp / "baseline.log")
            upload(kiln, "digits", mlp)
            upload(kiln, "cnn", cnn)
            procs.append(mlflow_server(mlp, tmp, mlflow_port))
            run_all(kiln, base, f"http://127.0.0.1:{mlflow_port}", mlp, procs[0].pid)
        finally:
            for proc in procs:
                stop(proc)


def run_all(kiln: str, base: str, mlflow: str, mlp: Path, kiln_pid: int) -> None:
    row = np.random.default_rng(0).random((1, 64), dtype=np.float32) * 16
    body = json.dumps({"inputs": row.tolist()}).encode()
    for url in (f"{kiln}/v1/models/digits/versions/1/predict", f"{base}/predict"):  # warm both up
        wrk.run(url, body, headers=JSON | AUTH, connections=1, seconds=2)
    print("1. one client, one-row predict, digits MLP")
    floor = in_process_us(mlp, row)
    ours = wrk.run(f"{kiln}/v1/models/digits/versions/1/predict", body, headers=JSON | AUTH, connections=1)
    theirs = wrk.run(f"{base}/predict", body, headers=JSON | AUTH, connections=1)
    print(f"  onnxruntime in-process (the floor)            p50 {floor:7.1f} us")
    print(line("20-line FastAPI + onnxruntime", theirs))
    print(line("Kiln /v1 predict", ours))
    print(f"  Kiln p50 / 20-line p50 = {ours.p50_ms / theirs.p50_ms:.2f} (target <= 1)")

    print("2. 64 clients, digits MLP")
    ours64 = wrk.run(f"{kiln}/v1/models/digits/versions/1/predict", body, headers=JSON | AUTH, connections=64, threads=2)
    theirs64 = wrk.run(f"{base}/predict", body, headers=JSON | AUTH, connections=64, threads=2)
    print(line("20-line FastAPI + onnxruntime", theirs64))
    print(line("Kiln /v1 predict", ours64))
    mlflow_body = json.dumps({"inputs": {"input": row.tolist()}}).encode()
    flow64 = wrk.run(f"{mlflow}/invocations", mlflow_body, headers=JSON | AUTH, connections=64, threads=2)
    print(line("mlflow models serve (ONNX flavour, 1 worker)", flow64))
    print(f"  Kiln / MLflow throughput = {ours64.requests_per_s / flow64.requests_per_s:.2f}x (target >= 3)")
    print(f"  Kiln / 20-line throughput = {ours64.requests_per_s / theirs64.requests_per_s:.2f}x")
    batching_and_binary(kiln)
    memory()


def batching_and_binary(kiln: str) -> None:
    print("3. the seeds' CNN on (64, 64, 3), 64 clients, one image per request")
    image = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 64, 64, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": image.nbytes}}],
                         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()  # fmt: skip
    v2_url = f"{kiln}/v2/models/cnn/versions/1/infer"
    binary_headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    wrk.run(v2_url, header + image.tobytes(), headers=binary_headers | AUTH, connections=8, seconds=2)
    binary = wrk.run(v2_url, header + image.tobytes(), headers=binary_headers | AUTH, connections=64, threads=2)
    httpx.patch(f"{kiln}/v1/models/cnn/versions/1", json={"max_batch_size": 1}, headers=AUTH, timeout=10)
    single = wrk.run(v2_url, header + image.tobytes(), headers=binary_headers | AUTH, connections=64, threads=2)
    httpx.patch(f"{kiln}/v1/models/cnn/versions/1", json={"max_batch_size": 64}, headers=AUTH, timeout=10)
    print(line("v2 binary, dynamic batching off (max_batch_size 1)", single))
    print(line("v2 binary, dynamic batching on (max_batch_size 64)", binary))
    print(f"  batching on / off = {binary.requests_per_s / single.requests_per_s:.2f}x (target >= 2)")
    v2_json = json.dumps({"inputs": [{"name": "input", "shape": [1, 64, 64, 3], "datatype": "FP32", "data": image.ravel().tolist()}]})
    as_json = wrk.run(v2_url, v2_json.encode(), headers=JSON | AUTH, connections=64, threads=2)
    v1_json = wrk.run(f"{kiln}/v1/models/cnn/versions/1/predict", json.dumps({"inputs": image.tolist()}).encode(), headers=JSON | AUTH,
                      connections=64, threads=2)  # fmt: skip
    print(line("v1 JSON (nested lists), batching on", v1_json))
    print(line("v2 JSON tensors, batching on", as_json))
    print(f"  binary / JSON = {binary.requests_per_s / as_json.requests_per_s:.2f}x (target >= 3)")


def memory() -> None:
    """A fresh API process: its RSS idle, then with 20 digits-sized models loaded and warmed."""
    print("4. API resident memory with 20 digits-sized models loaded (a fresh API process)")
    with tempfile.TemporaryDirectory() as name:
        tmp, port = Path(name), free_port()
        (tmp / "kiln").mkdir()
        migrate(f"sqlite:///{tmp / 'kiln' / 'kiln.db'}")
        env = kiln_env(data_dir=str(tmp / "kiln"), max_loaded_models="32")
        AUTH.update(mint_key(env))
        proc = spawn([sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", str(port), "--no-access-log"],
                     env, tmp / "kiln.log")  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/healthz", proc, tmp / "kiln.log")
            for i in range(20):
                upload(url, f"m{i}", onnx_file(MLP, tmp / f"m{i}.onnx", seed=i + 1))
            row = {"inputs": [[0.0] * 64]}
            httpx.post(f"{url}/v1/models/m0/predict", json=row, headers=AUTH, timeout=10)  # onnxruntime's own start-up
            before = rss_mib(proc.pid)
            for i in range(1, 20):
                assert httpx.post(f"{url}/v1/models/m{i}/predict", json=row, headers=AUTH, timeout=10).status_code == 200
            after = rss_mib(proc.pid)
        finally:
            stop(proc)
    print(f"  RSS {before:.0f} MiB with 1 model loaded, {after:.0f} MiB with 20: {(after - before) / 19:.2f} MiB per added model")


if __name__ == "__main__":
    main()
