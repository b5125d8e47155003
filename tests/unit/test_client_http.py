"""The client's retry policy and errors, against a real HTTP server on loopback that answers as told."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kiln.errors import KilnError
from kiln.http import Http

from tests.conftest import free_port


class Server:
    """Answers each request with the next of `replies` (status, headers, body), and records what it was sent."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, str], dict]] = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                owner.seen.append((self.command, self.path, dict(self.headers)))
                status, headers, body = owner.replies.pop(0) if owner.replies else (200, {}, {"ok": True})
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    made = Server()
    yield made
    made.httpd.shutdown()


def client(url: str, sleeps: list[float]) -> Http:
    http = Http(url, "secret")
    http.sleep = sleeps.append  # type: ignore[method-assign]
    return http


def test_a_503_is_retried_after_its_retry_after_on_idempotent_calls_only(server: Server) -> None:
    sleeps: list[float] = []
    http = client(server.url, sleeps)
    busy = {"error": {"code": "unavailable", "message": "busy", "field": None}}
    server.replies = [(503, {"Retry-After": "2"}, busy), (200, {}, {"answer": 42})]
    assert http.json("GET", "/v1/models") == {"answer": 42} and sleeps == [2.0]
    assert server.seen[0][2]["Authorization"] == "Bearer secret"
    server.replies = [(503, {"Retry-After": "2"}, busy)]
    with pytest.raises(KilnError) as err:
        http.json("POST", "/v1/datasets", json={})  # not idempotent: never sent twice
    assert err.value.status == 503 and err.value.code == "unavailable" and len(server.seen) == 3


def test_an_error_carries_the_servers_code_field_and_message(server: Server) -> None:
    server.replies = [(422, {}, {"error": {"code": "invalid_spec", "message": "expected units >= 1", "field": "model.layers[0].units",
                                           "details": [{"field": "model.layers[0].units", "message": "too small"}]}})]  # fmt: skip
    with pytest.raises(KilnError) as err:
        client(server.url, []).json("POST", "/v1/jobs", json={})
    assert (err.value.code, err.value.field, err.value.message, err.value.status) == (
        "invalid_spec", "model.layers[0].units", "expected units >= 1", 422)  # fmt: skip
    assert "model.layers[0].units: too small" in str(err.value)


def test_connection_errors_are_retried_with_backoff_then_reported() -> None:
    sleeps: list[float] = []
    with pytest.raises(KilnError) as err:
        client(f"http://127.0.0.1:{free_port()}", sleeps).json("GET", "/v1/jobs")
    assert err.value.code == "unreachable" and sleeps == sorted(sleeps) and len(sleeps) == 6 and sleeps[0] < sleeps[-1]
    sleeps.clear()
    with pytest.raises(KilnError):
        client(f"http://127.0.0.1:{free_port()}", sleeps).json("POST", "/v1/datasets")
    assert sleeps == []  # not idempotent: no retry
