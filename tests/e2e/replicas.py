"""More API processes on a running stack's registry, keys with their ids, and /metrics read as numbers.

The README's promises about replicas (an alias moved on one is seen by the others, a revoked key
stops working on all of them) need a second API process on the same database; the e2e `kiln`
stack is the first.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.e2e.helpers import spawn_api, stop


@contextlib.contextmanager
def api_replica(env: dict[str, str], log: Path, **settings: str) -> Iterator[dict[str, Any]]:
    """Another uvicorn API on `env`'s registry (no worker of its own), with `settings` as KILN_ overrides; yields url and proc."""
    proc, port = spawn_api(env | {f"KILN_{k.upper()}": v for k, v in settings.items()}, log)  # redrawn on a bind conflict
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), what=f"the replica at {url} to be ready", timeout=90, alive=(proc, log))
        yield {"url": url, "proc": proc}
    finally:
        stop(proc)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = 60,
             alive: tuple[subprocess.Popen[bytes], Path] | None = None) -> Any:  # fmt: skip
    """Poll `condition` until it returns something truthy (which is returned); fail after `timeout` seconds, or if `alive` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive[0].poll() is not None:
            raise AssertionError(f"the process exited while waiting for {what}:\n{alive[1].read_text(errors='replace')[-3000:]}")
        if found := condition():
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what} after {timeout} s")


def create_key(env: dict[str, str], scopes: str) -> tuple[str, dict[str, str]]:
    """`kiln-admin create-key` on `env`'s registry: the key's id and its Authorization header."""
    made = subprocess.run([sys.executable, "-m", "api.cli", "create-key", "--scopes", scopes], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    key_id = re.search(r"created key ([0-9a-f-]{36})", made.stderr)
    assert key_id, made.stderr
    return key_id.group(1), {"Authorization": f"Bearer {made.stdout.strip()}"}


def revoke_key(env: dict[str, str], key_id: str) -> None:
    subprocess.run([sys.executable, "-m", "api.cli", "revoke-key", key_id], cwd=ROOT, env=env, capture_output=True, text=True,
                   check=True)  # fmt: skip


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` in a Prometheus exposition whose labels include `labels`."""
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )  # fmt: skip
