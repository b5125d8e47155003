"""The `kiln` command against a real API and worker (PostgreSQL and Redis): every command once, with its exit code and
its stdout; a --follow that outlives an API restart; the live bar under a real pseudo-terminal."""

from __future__ import annotations

import copy
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from services.data.builtins import load_builtin
from tests.conftest import ROOT
from tests.datasets_factory import iris_csv, sentiment_csv
from tests.e2e.helpers import api_command, spawn, wait_for_job
from tests.factories import gan_body, job_body
from tests.integration.test_studies import study_body

KILN = shutil.which("kiln", path=str(Path(sys.executable).parent)) or "kiln"
DIGITS = job_body(model_name="cli-digits", training={"epochs": 4})


def cli_env(url: str, headers: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    return env | {"KILN_URL": url, "KILN_API_KEY": headers["Authorization"].removeprefix("Bearer "), "COLUMNS": "160"}


def run_cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KILN, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


def write(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(json.dumps(body))
    return path


@pytest.fixture(scope="module")
def trained(kiln: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A digits MLP trained through `kiln train --follow`, and the environment the CLI runs in."""
    env, tmp = cli_env(kiln["url"], kiln["headers"]), tmp_path_factory.mktemp("cli")
    result = run_cli(env, "train", str(write(tmp / "digits.json", DIGITS)), "--follow", "-o", "json", timeout=300)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return {"env": env, "tmp": tmp, "end": json.loads(result.stdout), "url": kiln["url"], "headers": kiln["headers"]}


def test_train_follow_ends_with_the_job_and_its_version(trained: dict[str, Any]) -> None:
    job, version = trained["end"]["job"], trained["end"]["version"]
    assert job["state"] == "succeeded" and [e["epoch"] for e in job["history"]] == [1, 2, 3, 4]
    assert version["model"] == "cli-digits" and version["version"] == job["version"] and "accuracy" in version["metrics"]
    assert version["dataset"]["input_range"] == [0.0, 16.0]  # stored with the version: the client never guesses


def test_jobs_job_logs_and_plot(trained: dict[str, Any]) -> None:
    env, job_id = trained["env"], trained["end"]["job"]["id"]
    assert job_id in [j["id"] for j in as_json(run_cli(env, "jobs", "-o", "json"))]
    assert [j["id"] for j in as_json(run_cli(env, "jobs", "--state", "succeeded", "-o", "json"))].count(job_id) == 1
    table = run_cli(env, "jobs")
    assert table.returncode == 0 and job_id in table.stdout and "succeeded" in table.stdout
    assert as_json(run_cli(env, "job", job_id, "-o", "json"))["state"] == "succeeded"
    lines = run_cli(env, "logs", job_id)
    assert [line.split()[1] for line in lines.stdout.splitlines()] == ["1", "2", "3", "4"] and "val_loss" in lines.stdout
    streamed = [json.loads(line) for line in run_cli(env, "logs", job_id, "-f", "-o", "json").stdout.splitlines()]
    assert [e["data"]["epoch"] for e in streamed if e["event"] == "epoch"] == [1, 2, 3, 4] and streamed[-1]["event"] == "end"
    # A client that reconnects with the id of the last event it saw gets only what came after it.
    with httpx.stream(
        "GET", f"{trained['url']}/v1/jobs/{job_id}/events", headers=trained["headers"] | {"Last-Event-ID": "2.0.running"}
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith(("id:", "event:"))]
    assert lines[:4] == ["id: 3.0.running", "event: epoch", "id: 4.0.running", "event: epoch"]
    assert lines[-4:] == ["id: 4.0.succeeded", "event: state", "id: 4.0.succeeded", "event: end"]
    terminal = run_cli(env, "plot", job_id)
    assert terminal.returncode == 0 and "epoch" in terminal.stdout
    png = trained["tmp"] / "curves.png"
    assert run_cli(env, "plot", job_id, "-o", str(png)).returncode == 0 and png.read_bytes()[:4] == b"\x89PNG"
    missing = run_cli(env, "job", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "error" in missing.stderr and "no job with id" in missing.stderr and missing.stdout == ""


def test_models_versions_alias_and_download(trained: dict[str, Any]) -> None:
    env, number = trained["env"], trained["end"]["version"]["version"]
    assert "cli-digits" in [m["name"] for m in as_json(run_cli(env, "models", "-o", "json"))]
    assert [v["version"] for v in as_json(run_cli(env, "versions", "cli-digits", "-o", "json"))] == [number]
    assert as_json(run_cli(env, "alias", "cli-digits", "production", str(number), "-o", "json"))["aliases"] == ["production"]
    target = trained["tmp"] / "model.onnx"
    assert run_cli(env, "download", "cli-digits", str(number), "-o", str(target)).returncode == 0
    assert target.stat().st_size == trained["end"]["version"]["artifact"]["size"]


def test_predict_from_an_array_a_csv_and_a_png_of_a_digit(trained: dict[str, Any]) -> None:
    env, tmp = trained["env"], trained["tmp"]
    data = load_builtin("digits")
    rows, truth = data.x_test[:20], [str(int(y)) for y in data.y_test[:20]]
    np.save(tmp / "x.npy", rows)
    from_npy = as_json(run_cli(env, "predict", "cli-digits", "-i", str(tmp / "x.npy"), "-o", "json"))
    assert sum(a == b for a, b in zip(from_npy["labels"], truth, strict=True)) >= 16  # it learnt
    (tmp / "rows.csv").write_text("\n".join(",".join(f"{v:g}" for v in row) for row in rows[:3]))
    table = run_cli(env, "predict", "cli-digits:1", "-i", str(tmp / "rows.csv"))
    assert table.returncode == 0 and "label" in table.stdout and "probability" in table.stdout
    assert [line.split()[1] for line in table.stdout.splitlines()[1:4]] == from_npy["labels"][:3]
    # A PNG of a digit, as a person would draw it at 8x8: ink bright on dark, 0-255.
    right = next(i for i in range(20) if from_npy["labels"][i] == truth[i])
    pixels = (rows[right].reshape(8, 8) / 16 * 255).round().astype(np.uint8)
    Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).save(tmp / "digit.png")
    from_png = as_json(run_cli(env, "predict", "cli-digits@production", "-i", str(tmp / "digit.png"), "-o", "json"))
    assert from_png["labels"] == [truth[right]]


def test_train_exit_codes_say_how_the_job_ended(trained: dict[str, Any]) -> None:
    env, tmp = trained["env"], trained["tmp"]
    failing = write(tmp / "failing.json", job_body(model_name="cli-fails", training={"epochs": 3, "max_duration_s": 1e-6}))
    failed = run_cli(env, "train", str(failing), "--follow")
    assert failed.returncode == 1 and "failed" in failed.stderr
    slow = write(tmp / "slow.json", job_body(model_name="cli-slow", training={"epochs": 200, "batch_size": 4}))
    queued = run_cli(env, "train", str(slow))
    job_id = queued.stdout.strip()
    assert queued.returncode == 0 and len(job_id) == 36
    follower = subprocess.Popen([KILN, "train", str(slow), "--follow"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)  # fmt: skip
    time.sleep(2)
    assert run_cli(env, "cancel", job_id).returncode == 0
    with httpx.Client(base_url=trained["url"], headers=trained["headers"], timeout=30) as client:
        assert wait_for_job(client, f"/v1/jobs/{job_id}")["state"] == "cancelled"
        followed = [j for j in client.get("/v1/jobs?limit=200").json()["data"] if j["model_name"] == "cli-slow" and j["id"] != job_id]
        client.post(f"/v1/jobs/{followed[0]['id']}/cancel")
    assert follower.wait(timeout=120) == 2  # cancelled


def test_upload_generate_detect_and_study(trained: dict[str, Any]) -> None:
    env, tmp = trained["env"], trained["tmp"]
    (tmp / "iris.csv").write_text(iris_csv())
    uploaded = as_json(run_cli(env, "upload", str(tmp / "iris.csv"), "--target", "species", "-o", "json"))
    assert uploaded["n_samples"] == 150 and uploaded["target"]["class_names"] == ["setosa", "versicolor", "virginica"]
    (tmp / "reviews.csv").write_text(sentiment_csv())
    reviews = as_json(run_cli(env, "upload", str(tmp / "reviews.csv"), "--format", "text_csv", "-o", "json"))
    sentiment = write(tmp / "sentiment.json", {
        "model_name": "cli-sentiment",
        "model": {"input_shape": [16], "layers": [{"type": "Embedding", "input_dim": 200, "output_dim": 16},
                                                  {"type": "LSTM", "units": 16}, {"type": "Dense", "units": 1, "activation": "sigmoid"}]},
        "data": {"dataset": reviews["id"], "validation_split": 0.1, "text": {"max_tokens": 200, "sequence_length": 16}},
        "training": {"optimizer": {"name": "adam", "learning_rate": 0.01}, "loss": "binary_crossentropy", "epochs": 8},
    })  # fmt: skip
    assert run_cli(env, "train", str(sentiment), "--follow").returncode == 0
    said = as_json(run_cli(env, "predict", "cli-sentiment", "-i", "A wonderful film, I loved it", "-o", "json"))
    assert said["labels"] == ["positive"]
    table = run_cli(env, "predict", "cli-sentiment", "-i", "Boring plot and awful actors")
    assert table.returncode == 0 and table.stdout.splitlines()[1].split()[1] == "negative"
    gan = write(tmp / "gan.json", gan_body(epochs=2) | {"model_name": "cli-gan"})
    assert run_cli(env, "train", str(gan), "--follow").returncode == 0
    grid = tmp / "grid.png"
    assert (
        run_cli(env, "generate", "cli-gan", "-n", "4", "--seed", "0", "-o", str(grid)).returncode == 0
        and grid.read_bytes()[:4] == b"\x89PNG"
    )
    samples = as_json(run_cli(env, "generate", "cli-gan", "-n", "4", "--seed", "0"))
    assert np.asarray(samples["outputs"]).shape == (4, 64)
    autoencoder = copy.deepcopy(json.loads((ROOT / "examples" / "anomaly_autoencoder_digits.json").read_text()))
    autoencoder["model_name"], autoencoder["training"]["epochs"] = "cli-ae", 2
    assert run_cli(env, "train", str(write(tmp / "ae.json", autoencoder)), "--follow").returncode == 0
    (tmp / "ae.csv").write_text("\n".join(",".join(f"{v:g}" for v in row) for row in load_builtin("digits").x_test[:5]))
    found = as_json(run_cli(env, "detect", "cli-ae", "-i", str(tmp / "ae.csv"), "-o", "json"))
    assert len(found["scores"]) == 5 and all(s >= 0 for s in found["scores"])
    study = write(tmp / "study.json", study_body(job=job_body(model_name="cli-study", training={"epochs": 2})))
    ended = run_cli(env, "study", str(study), "--follow", "-o", "json")
    assert ended.returncode == 0 and json.loads(ended.stdout.splitlines()[-1])["state"] == "succeeded"


def test_the_bar_is_live_under_a_real_terminal(trained: dict[str, Any]) -> None:
    spec = write(trained["tmp"] / "tty.json", job_body(model_name="cli-tty", training={"epochs": 5}))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([KILN, "train", str(spec), "--follow"], env=trained["env"] | {"TERM": "xterm"}, stdin=follower,
                            stdout=follower, stderr=follower, cwd=ROOT, close_fds=True)  # fmt: skip
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                screen += os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
        elif proc.poll() is not None:
            break
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    text = screen.decode(errors="replace")
    assert "\x1b[" in text  # drawn with terminal controls: a live display, redrawn in place
    assert "5/5" in text and "epoch" in text and "val_loss" in text and "ETA" in text
    assert "━" in text  # the bar


def test_follow_survives_an_api_restart_and_misses_no_epoch(stack_on: Any, redis_url: str, tmp_path: Path) -> None:
    stack = stack_on(redis_url)
    env = cli_env(stack.url, stack.headers)
    spec = write(tmp_path / "slow.json", job_body(model_name="cli-restart", training={"epochs": 30, "batch_size": 4}))
    train = subprocess.Popen([KILN, "train", str(spec), "--follow", "-o", "json"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=30) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (jobs := client.get("/v1/jobs").json()["data"]):
            time.sleep(0.1)
        job_id = jobs[0]["id"]
        logs = subprocess.Popen([KILN, "logs", job_id, "-f", "-o", "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)  # fmt: skip
        while client.get(f"/v1/jobs/{job_id}").json()["epoch"] < 3:
            time.sleep(0.1)
    assert train.poll() is None and logs.poll() is None  # both following, mid-job
    stack.api.send_signal(signal.SIGKILL)  # the API goes away mid-job, streams and all
    stack.api.wait()
    time.sleep(1.0)
    stack.api = spawn(api_command(stack.port), stack.env, stack.tmp / "api-restarted.log")
    out, err = train.communicate(timeout=180)
    assert train.returncode == 0, err
    end = json.loads(out)
    assert end["job"]["state"] == "succeeded" and len(end["job"]["history"]) == 30
    out, err = logs.communicate(timeout=60)
    assert logs.returncode == 0, err
    epochs = [e["data"]["epoch"] for e in map(json.loads, out.splitlines()) if e["event"] == "epoch"]
    assert epochs == list(range(1, 31))  # every epoch once, across the restart


def test_the_quick_start_on_make_runs_embedded_stack(tmp_path: Path) -> None:
    """`make run`, then `kiln train examples/cnn_digits.json --follow` from the same folder (its key found in ./var/api-key)
    and `kiln predict` on a PNG of a digit."""
    from tests.e2e.helpers import start_make_run, stop

    proc, url = start_make_run(tmp_path / "var", tmp_path / "make-run.log")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")} | {"KILN_URL": url, "COLUMNS": "160"}
        run = lambda *args: subprocess.run([KILN, *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)  # noqa: E731
        trained = run("train", str(ROOT / "examples" / "cnn_digits.json"), "--follow")
        assert trained.returncode == 0, (trained.stdout, trained.stderr)
        assert "cnn-digits" in trained.stdout and "accuracy" in trained.stdout  # the summary: test metrics and version
        data = load_builtin("digits")
        row, label = data.x_test[0], str(int(data.y_test[0]))
        pixels = (row.reshape(8, 8) / 16 * 255).round().astype(np.uint8)
        Image.fromarray(pixels).resize((64, 64), Image.Resampling.NEAREST).save(tmp_path / "digit.png")
        predicted = run("predict", "cnn-digits", "-i", str(tmp_path / "digit.png"))
        assert predicted.returncode == 0, predicted.stderr
        assert predicted.stdout.splitlines()[1].split()[1] == label, predicted.stdout
    finally:
        stop(proc, sig=signal.SIGINT, timeout=60)


def _read_until(leader: int, wanted: bytes, screen: bytearray, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while wanted not in screen:
        assert time.monotonic() < deadline, screen.decode(errors="replace")[-2000:]
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            screen.extend(os.read(leader, 65536))


def test_ctrl_c_asks_whether_to_cancel_and_cancelling_exits_2(trained: dict[str, Any]) -> None:
    spec = write(trained["tmp"] / "ctrl-c.json", job_body(model_name="cli-ctrl-c", training={"epochs": 400, "batch_size": 4}))
    pid, leader = pty.fork()  # the child's controlling terminal: Ctrl-C there is its SIGINT
    if pid == 0:
        os.chdir(ROOT)
        os.execve(KILN, [KILN, "train", str(spec), "--follow"], trained["env"] | {"TERM": "xterm"})
    screen = bytearray()
    _read_until(leader, b"epoch", screen)
    _read_until(leader, b"loss", screen)  # an epoch has been shown: it is training
    os.write(leader, b"\x03")
    _read_until(leader, b"cancel job", screen)
    os.write(leader, b"y\r")
    _, status = os.waitpid(pid, 0)
    try:
        while select.select([leader], [], [], 0.2)[0]:
            screen.extend(os.read(leader, 65536))
    except OSError:
        pass
    os.close(leader)
    assert os.waitstatus_to_exitcode(status) == 2, screen.decode(errors="replace")[-2000:]
    with httpx.Client(base_url=trained["url"], headers=trained["headers"], timeout=30) as client:
        jobs = [j for j in client.get("/v1/jobs?limit=200").json()["data"] if j["model_name"] == "cli-ctrl-c"]
    assert [j["state"] for j in jobs] == ["cancelled"]
