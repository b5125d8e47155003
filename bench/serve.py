"""Serving benchmarks: every figure beside its baseline, measured in this run with the same load generator (wrk).

1. One client, one-row predict on the digits MLP (64 -> 64 -> 32 -> 10): p50 and p99 for Kiln, the
   20-line FastAPI + onnxruntime handler (bench/baseline_server.py), the bare ASGI floor
   (bench/floor_app.py: uvicorn with uvloop and httptools, orjson, no framework) and onnxruntime in-process.
2. 64 clients, same model: requests per second for Kiln, the 20-line handler, the floor and `mlflow models serve`.
Kiln / floor is reported for the one-client p50 and the 64-client throughput.
`--floor-only` runs just Kiln beside the floor (parts 1 and 2, without MLflow); `--seconds` sets each wrk run's length.
3. The seeds' CNN on (64, 64, 3) at 64 clients: dynamic batching on / off, and binary v2 tensors / JSON.
4. The API's resident memory with 20 digits-sized models loaded.
"""

from __future__ import annotations

import argparse
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
SECONDS = 10  # each wrk run's length; --seconds changes it
FLOOR_TARGET = 0.6  # Kiln's 64-client throughput as a share of the floor's


def onnx_file(model: dict, path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    spec = ModelSpec.model_validate(model)
    network = build_network(spec, fuse_output_activation=True)
    export_onnx(network, examples=[example_input(tuple(spec.input_shape or ()), "float32")], path=path)
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


def servers(tmp: Path, mlp: Path) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    """Kiln on SQLite, the 20-line FastAPI handler and the bare ASGI floor, each on a port of its own, ready."""
    ports = {"kiln": free_port(), "base": free_port(), "floor": free_port()}
    env = kiln_env(data_dir=str(tmp / "kiln"))
    (tmp / "kiln").mkdir()
    migrate(f"sqlite:///{tmp / 'kiln' / 'kiln.db'}")
    AUTH.update(mint_key(env))
    uvicorn, quiet = [sys.executable, "-m", "uvicorn"], ["--no-access-log"]
    model_env = env | {"KILN_BENCH_MODEL": str(mlp)}
    procs = [
        spawn([*uvicorn, "--factory", "api.main:create_app", "--port", str(ports["kiln"]), *quiet], env, tmp / "kiln.log"),
        spawn([*uvicorn, "bench.baseline_server:app", "--port", str(ports["base"]), *quiet], model_env, tmp / "base.log"),
        spawn([*uvicorn, "bench.floor_app:app", "--port", str(ports["floor"]), "--loop", "uvloop", "--http", "httptools",
               "--lifespan", "off", *quiet], model_env, tmp / "floor.log"),
    ]  # fmt: skip
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    for proc, (name, probe) in zip(procs, [("kiln", "/healthz"), ("base", "/docs"), ("floor", "/")], strict=True):
        wait_http(f"{urls[name]}{probe}", proc, tmp / f"{name}.log")
    return urls, procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floor-only", action="store_true", help="only Kiln beside the floor (parts 1 and 2, no MLflow)")
    parser.add_argument("--seconds", type=int, default=SECONDS, help="each wrk run's length")
    args = parser.parse_args()
    globals()["SECONDS"] = args.seconds
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        mlp, cnn = onnx_file(MLP, tmp / "mlp.onnx"), onnx_file(CNN, tmp / "cnn.onnx")
        urls, procs = servers(tmp, mlp)
        try:
            upload(urls["kiln"], "digits", mlp)
            if args.floor_only:
                one_client(urls, mlp)
                many_clients(urls, None)
                return
            upload(urls["kiln"], "cnn", cnn)
            mlflow_port = free_port()
            procs.append(mlflow_server(mlp, tmp, mlflow_port))
            one_client(urls, mlp)
            many_clients(urls, f"http://127.0.0.1:{mlflow_port}")
            batching_and_binary(urls["kiln"])
            memory()
        finally:
            for proc in procs:
                stop(proc)


def _digits_row() -> np.ndarray:
    return np.random.default_rng(0).random((1, 64), dtype=np.float32) * 16


def _digits_body() -> bytes:
    return json.dumps({"inputs": _digits_row().tolist()}).encode()


def _targets(urls: dict[str, str]) -> dict[str, str]:
    return {"kiln": f"{urls['kiln']}/v1/models/digits/versions/1/predict", "base": f"{urls['base']}/predict",
            "floor": f"{urls['floor']}/predict"}  # fmt: skip


def one_client(urls: dict[str, str], mlp: Path) -> None:
    """Part 1: one client, one-row predict on the digits MLP, beside the 20-line handler, the floor and in-process."""
    body, targets = _digits_body(), _targets(urls)
    for url in targets.values():  # warm each up
        wrk.run(url, body, headers=JSON | AUTH, connections=1, seconds=2)
    print("1. one client, one-row predict, digits MLP")
    in_process = in_process_us(mlp, _digits_row())
    loads = {name: wrk.run(url, body, headers=JSON | AUTH, connections=1, seconds=SECONDS) for name, url in targets.items()}
    print(f"  onnxruntime in-process                        p50 {in_process:7.1f} us")
    print(line("bare ASGI + orjson + onnxruntime (the floor)", loads["floor"]))
    print(line("20-line FastAPI + onnxruntime", loads["base"]))
    print(line("Kiln /v1 predict", loads["kiln"]))
    print(f"  Kiln p50 / 20-line p50 = {loads['kiln'].p50_ms / loads['base'].p50_ms:.2f} (target <= 1)")
    print(f"  Kiln p50 / floor p50 = {loads['kiln'].p50_ms / loads['floor'].p50_ms:.2f}x")


def many_clients(urls: dict[str, str], mlflow: str | None) -> None:
    """Part 2: 64 clients on the digits MLP; MLflow too unless `mlflow` is None."""
    body, targets = _digits_body(), _targets(urls)
    print("2. 64 clients, digits MLP")
    loads = {name: wrk.run(url, body, headers=JSON | AUTH, connections=64, threads=2, seconds=SECONDS) for name, url in targets.items()}
    print(line("bare ASGI + orjson + onnxruntime (the floor)", loads["floor"]))
    print(line("20-line FastAPI + onnxruntime", loads["base"]))
    print(line("Kiln /v1 predict", loads["kiln"]))
    if mlflow is not None:
        row = json.loads(body)["inputs"]
        flow64 = wrk.run(f"{mlflow}/invocations", json.dumps({"inputs": {"input": row}}).encode(), headers=JSON | AUTH, connections=64,
                         threads=2, seconds=SECONDS)  # fmt: skip
        print(line("mlflow models serve (ONNX flavour, 1 worker)", flow64))
        print(f"  Kiln / MLflow throughput = {loads['kiln'].requests_per_s / flow64.requests_per_s:.2f}x (target >= 3)")
    print(f"  Kiln / 20-line throughput = {loads['kiln'].requests_per_s / loads['base'].requests_per_s:.2f}x")
    share = loads["kiln"].requests_per_s / loads["floor"].requests_per_s
    print(f"  Kiln / floor throughput = {share:.2f}x (target >= {FLOOR_TARGET})")


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
