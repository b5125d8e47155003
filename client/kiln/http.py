"""One HTTP session to a Kiln server: the key, the retries, the errors and the event streams."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from kiln.errors import KilnError

DEFAULT_URL = "http://127.0.0.1:8000"
RETRIES = 6  # connection errors and 503s, on idempotent calls: about a minute of backoff in all
MAX_WAIT_S = 30.0


def _local(url: str) -> bool:
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


def find_key(url: str, api_key: str | None) -> str | None:
    """The key given, else KILN_API_KEY, else (talking to this machine) the one `make run` wrote to ./var/api-key."""
    if api_key:
        return api_key
    if os.environ.get("KILN_API_KEY"):
        return os.environ["KILN_API_KEY"]
    local = Path("var") / "api-key"
    return local.read_text().strip() if _local(url) and local.is_file() else None


class Http:
    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("KILN_URL") or DEFAULT_URL).rstrip("/")
        key = find_key(self.url, api_key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.session = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.sleep = time.sleep  # tests may speed the backoff up

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """One call; a 503 is retried after its Retry-After and a connection error with backoff, for idempotent calls only
        (GET, PUT, DELETE, and a POST that says it is, such as a job sent with an Idempotency-Key)."""
        safe = method in ("GET", "HEAD", "PUT", "DELETE") if idempotent is None else idempotent
        for attempt in range(RETRIES + 1):
            try:
                response = self.session.request(method, path, **kwargs)
            except httpx.TransportError as err:
                if not safe or attempt == RETRIES:
                    raise KilnError(f"cannot reach Kiln at {self.url}: {err}", code="unreachable") from err
                self.sleep(min(0.25 * 2**attempt, MAX_WAIT_S))
                continue
            if response.status_code == 503 and safe and attempt < RETRIES:
                self.sleep(_retry_after(response, attempt))
                continue
            if response.status_code >= 400:
                raise KilnError.of(response.status_code, _json(response))
            return response
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def events(self, path: str, *, deadline_s: float = 3600.0) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event, data) from a Server-Sent Events stream until its `end`; a dropped connection (the API restarting, say)
        is resumed with Last-Event-ID, so no event is missed or repeated."""
        last_id, started, failures = None, time.monotonic(), 0
        while time.monotonic() - started < deadline_s:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.session.stream("GET", path, headers=headers, timeout=httpx.Timeout(30.0, read=None)) as response:
                    if response.status_code >= 400:
                        response.read()
                        if response.status_code != 503:
                            raise KilnError.of(response.status_code, _json(response))
                        raise httpx.ConnectError("503")
                    failures = 0
                    name, data, event_id = "message", [], None
                    for line in response.iter_lines():
                        if line.startswith("id:"):
                            event_id = line[3:].strip()
                        elif line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif not line and data:
                            last_id = event_id or last_id
                            yield name, json.loads("\n".join(data))
                            if name == "end":
                                return
                            name, data, event_id = "message", [], None
            except (httpx.TransportError, httpx.StreamError):
                pass
            failures += 1
            self.sleep(min(0.25 * 2 ** min(failures, 6), 5.0))
        raise KilnError(f"gave up following {path} after {deadline_s:g} s", code="timeout")


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        return min(float(response.headers.get("Retry-After", "")), MAX_WAIT_S)
    except ValueError:
        return min(0.5 * 2**attempt, MAX_WAIT_S)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
