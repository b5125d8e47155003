"""Wake-ups between processes through FIFOs beside a SQLite database: real FIFOs, real processes, a poll only as the
fallback (services/wakeups.py)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import stat
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from services.wakeups import Waker, _poke, wake_folder, waker_for

FORK = multiprocessing.get_context("fork")


def _fifos(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if stat.S_ISFIFO(p.lstat().st_mode))


def _listen(folder: str, out: Connection, timeout: float) -> None:
    """A listener process: its FIFO made (a wait of 0), it says so, then waits `timeout` and says when it woke."""
    waker = Waker(Path(folder))
    waker.wait(0)
    out.send(("listening", waker.path.name if waker.path else None))
    waker.wait(timeout)
    out.send(("woke", None))
    time.sleep(60)  # still alive, its FIFO still open, until the test ends it


def _start_listener(folder: Path, timeout: float) -> tuple[multiprocessing.process.BaseProcess, Connection, str]:
    ours, theirs = FORK.Pipe()
    child = FORK.Process(target=_listen, args=(str(folder), theirs, timeout), daemon=True)
    child.start()
    assert ours.poll(30), "the listener never started"
    said, name = ours.recv()
    assert said == "listening" and name
    return child, ours, name


def _end(child: multiprocessing.process.BaseProcess) -> None:
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(10)


def test_wake_folder_sits_beside_a_sqlite_file_and_is_none_for_memory_or_a_server() -> None:
    assert wake_folder("sqlite:////var/kiln/broker.db") == Path("/var/kiln/broker.db.wake")
    assert wake_folder("sqlite:///relative/broker.db") == Path("relative/broker.db.wake")
    assert wake_folder("sqlite+pysqlite:////tmp/b.sqlite") == Path("/tmp/b.sqlite.wake")
    assert wake_folder("sqlite://") is None
    assert wake_folder("sqlite:///:memory:") is None
    assert wake_folder("postgresql://kiln@db:5432/kiln") is None
    assert wake_folder("postgresql+psycopg://kiln@db/kiln") is None


def test_a_wake_all_cuts_short_a_listener_waiting_in_another_process(tmp_path: Path) -> None:
    folder = tmp_path / "broker.db.wake"
    child, said, name = _start_listener(folder, timeout=30)
    try:
        assert _fifos(folder) == [name]  # renamed into place before it listens: no pending name left
        time.sleep(0.2)  # into its select
        assert not said.poll(0)  # waiting: nothing wakes it but a write
        Waker(folder).wake_all()  # a writer of its own, as a publisher in the API process is
        assert said.poll(10), "the listener slept on: no wake-up reached it"  # its timeout was 30 s
        assert said.recv() == ("woke", None)
    finally:
        _end(child)


def test_wait_returns_after_its_timeout_when_nothing_was_written(tmp_path: Path) -> None:
    waker = Waker(tmp_path / "wake")
    started = time.monotonic()
    waker.wait(0.2)
    assert time.monotonic() - started >= 0.19  # a wait, not a spin
    assert waker.path is not None and stat.S_ISFIFO(waker.path.stat().st_mode)
    assert waker.path.name.startswith(f"{os.getpid()}-")
    waker.close()


def test_one_wait_consumes_every_wake_up_written_before_it(tmp_path: Path) -> None:
    waker = Waker(tmp_path / "wake")
    waker.wait(0)  # listening
    waker.wake_all()
    waker.wake_all()
    started = time.monotonic()
    waker.wait(30)
    assert time.monotonic() - started < 10  # at once: a wake-up was waiting
    started = time.monotonic()
    waker.wait(0.2)
    assert time.monotonic() - started >= 0.19  # both bytes were read by the first wait: this one times out
    waker.close()


def test_wake_self_cuts_short_this_process_s_own_wait(tmp_path: Path) -> None:
    waker = Waker(tmp_path / "wake")
    waker.wait(0)
    waker.wake_self()
    started = time.monotonic()
    waker.wait(30)
    assert time.monotonic() - started < 10
    waker.close()


def test_the_fifo_of_a_listener_that_died_is_removed_by_the_next_wake_all(tmp_path: Path) -> None:
    folder = tmp_path / "wake"
    dead, _, dead_name = _start_listener(folder, timeout=30)
    alive, said, alive_name = _start_listener(folder, timeout=30)
    try:
        os.kill(dead.pid, signal.SIGKILL)  # type: ignore[arg-type]  # no atexit: its FIFO stays behind
        dead.join(10)
        os.mkfifo(folder / ".123-pending")  # made, not yet opened by its listener
        assert _fifos(folder) == sorted([dead_name, alive_name, ".123-pending"])
        Waker(folder).wake_all()
        assert _fifos(folder) == sorted([alive_name, ".123-pending"])  # nobody read the dead one's: gone
        assert said.poll(10) and said.recv() == ("woke", None)  # the living one was woken all the same
    finally:
        _end(dead)
        _end(alive)


def test_wake_all_without_any_listener_yet_does_nothing(tmp_path: Path) -> None:
    Waker(tmp_path / "never-made").wake_all()
    Waker(None).wake_all()
    assert not (tmp_path / "never-made").exists()


def _after_fork(waker: Waker, out: Connection, fifo: str) -> None:
    held = [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == fifo]
    forgot = (waker.fd, waker.path, waker.pid, held)
    waker.wake_self()  # the parent's FIFO is not its own: nothing is written
    waker.wake_all()  # but as a publisher it wakes every listener, its parent included
    out.send(forgot)


def test_a_forked_child_forgets_and_closes_its_parent_s_fifo(tmp_path: Path) -> None:
    waker = Waker(tmp_path / "wake")
    waker.wait(0)
    assert waker.fd is not None and waker.pid == os.getpid()
    ours, theirs = FORK.Pipe()
    child = FORK.Process(target=_after_fork, args=(waker, theirs, os.path.realpath(str(waker.path))))
    child.start()
    assert ours.poll(30)
    # No fd, no FIFO (the child would make one of its own on its first wait), and its copy of the parent's fd closed.
    assert ours.recv() == (None, None, 0, [])
    child.join(10)
    assert os.read(waker.fd, 4096) == b"!"  # one byte, from its wake_all; none from its wake_self
    with pytest.raises(BlockingIOError):
        os.read(waker.fd, 1)
    assert waker.fd is not None and waker.pid == os.getpid()  # the parent still listens
    waker.close()


def test_close_removes_the_process_s_own_fifo_and_a_later_wait_makes_a_new_one(tmp_path: Path) -> None:
    folder = tmp_path / "wake"
    waker = Waker(folder)
    waker.wait(0)
    first = waker.path
    assert first is not None and _fifos(folder) == [first.name]
    waker.close()
    assert waker.fd is None and _fifos(folder) == []
    waker.close()  # twice: nothing left to do
    waker.wait(0)
    assert waker.path is not None and waker.path != first and _fifos(folder) == [waker.path.name]
    waker.close()


def test_one_waker_per_folder_per_process(tmp_path: Path) -> None:
    assert waker_for(tmp_path / "a") is waker_for(tmp_path / "a")
    assert waker_for(tmp_path / "a") is not waker_for(tmp_path / "b")


def test_a_folder_without_fifos_falls_back_to_sleeping(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "broker.db.wake"
    folder.write_text("not a folder")  # mkdir, then mkfifo, fail on it
    waker = Waker(folder)
    with caplog.at_level(logging.WARNING, logger="services.wakeups"):
        started = time.monotonic()
        waker.wait(0.1)
    assert time.monotonic() - started >= 0.09  # slept its timeout, as kombu's poll would
    assert waker.fd is None and "wake-ups off" in caplog.text
    waker.wake_all()  # and publishing through it is harmless
    waker.wake_self()
    assert folder.read_text() == "not a folder"


def test_waking_never_raises_out_of_a_commit_that_has_happened(tmp_path: Path) -> None:
    """wake_all runs after a commit or a publish: a folder it cannot read, or a listener gone between the open and the
    write (a broken pipe), must not turn that success into an error."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    Waker(not_a_folder).wake_all()  # scandir: NotADirectoryError
    read, write = os.pipe()
    os.close(read)  # the listener closed its end
    try:
        _poke(write)  # BrokenPipeError, swallowed
    finally:
        os.close(write)
