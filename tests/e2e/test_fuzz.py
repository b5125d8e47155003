"""schemathesis against the running API's /openapi.json: every operation, with a valid admin key.

No 5xx, and every response documented in the schema matches it. Its own API on PostgreSQL and
Redis, with no worker: the jobs the fuzzer submits stay queued instead of training junk.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, migrate, postgres_database
from tests.e2e.helpers import answers, kiln_env, mint_key, spawn_api, stop
from tests.onnx_factory import scale

EXAMPLES = 30  # per operation


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    with postgres_database("kiln_fuzz") as database_url:
        migrate(database_url)
        env = kiln_env(data_dir=str(data_dir), database_url=database_url, broker_url=redis_url, max_body_mb="4", max_upload_mb="4")
        headers = mint_key(env)
        proc, port = spawn_api(env, data_dir / "api.log")
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url, proc, data_dir / "api.log")
            yield {"url": url, "headers": headers, "log": data_dir / "api.log", "config": _infer_on_a_real_model(url, headers, data_dir)}
        finally:
            stop(proc)


def _wait(url: str, proc: object, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not answers(f"{url}/healthz"):
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]  # type: ignore[attr-defined]
        time.sleep(0.2)


def _infer_on_a_real_model(url: str, headers: dict[str, str], data_dir: Path) -> Path:
    """A served model, and a config that points the v2 infer operations at it, so their bodies reach the parser, not a 404."""
    upload = httpx.post(f"{url}/v1/models/fuzz/versions", files={"file": ("m.onnx", scale(2.0, 4))}, headers=headers, timeout=60)
    assert upload.status_code == 201, upload.text
    config = data_dir / "schemathesis.toml"
    config.write_text('[[operations]]\ninclude-path-regex = "/infer$"\nparameters = { "path.name" = "fuzz", "path.version" = "1" }\n')
    return config


def test_no_operation_answers_5xx_or_off_schema(api: dict, tmp_path: Path) -> None:
    """The schemathesis CLI (examples, coverage, fuzzing and stateful phases), with a fixed seed so a failure reproduces."""
    run = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "schemathesis"), "--config-file", str(api["config"]), "run", f"{api['url']}/openapi.json",
         "--header", f"Authorization:{api['headers']['Authorization']}",
         "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
         "--max-examples", str(EXAMPLES), "--seed", "20261125", "--request-timeout", "30", "--no-color"],
        capture_output=True, text=True, timeout=540, cwd=tmp_path,  # its .schemathesis/ cache lands there, not in the repo
    )  # fmt: skip
    summary = run.stdout[-6000:]
    print(summary)
    assert run.returncode == 0, summary + "\n" + api["log"].read_text()[-3000:]
    generated, passed = _test_case_counts(run.stdout)
    assert generated > 0 and passed == generated, summary  # every generated case passed: no failure counted
    assert "unique failure" not in run.stdout and not re.search(r"\b\d+ (failure|error)s?\b", run.stdout), summary


def _test_case_counts(stdout: str) -> tuple[int, int]:
    """(generated, passed) from the CLI's `Test cases:` line; a run with failures says `found N unique failures` instead."""
    found = re.search(r"(\d+) generated, (\d+) passed", stdout)
    assert found, f"no test-case counts in the CLI's output: {stdout[-2000:]}"
    return int(found[1]), int(found[2])
