"""The e2e helpers' own promise: a process whose port another took first is started again on another port."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e import helpers
from tests.e2e.helpers import answers, kiln_env, spawn, spawn_on_free_ports, stop


@pytest.fixture
def taken() -> Iterator[int]:
    """A port bound and listening, as a process that won the race to it would hold it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_a_port_taken_meanwhile_is_drawn_again(taken: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([taken, free_port()])
    monkeypatch.setattr(helpers, "free_port", lambda: next(draws))
    log = tmp_path / "server.log"
    started: list[int] = []

    def start(port: int) -> object:
        started.append(port)
        return spawn([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], kiln_env(), log)

    proc, (port,) = spawn_on_free_ports(start, log, ready=lambda port: answers(f"http://127.0.0.1:{port}/"))  # type: ignore[arg-type]
    try:
        assert started == [taken, port] and port != taken
        assert answers(f"http://127.0.0.1:{port}/")
    finally:
        stop(proc)


def test_every_port_taken_is_an_error_naming_the_cause(taken: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "free_port", lambda: taken)
    log = tmp_path / "server.log"
    with pytest.raises(AssertionError, match="every port drawn was taken"):
        spawn_on_free_ports(lambda port: spawn([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], kiln_env(), log),
                            log, ready=lambda port: answers(f"http://127.0.0.1:{port}/"), attempts=2)  # fmt: skip
