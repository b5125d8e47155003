"""A job written by another process is announced to the API's listener: PostgreSQL's triggers NOTIFY its id (migration
0014), a SQLite commit wakes the FIFOs beside the file. Both registries, real processes writing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from services.registry.changes import ChangeListener
from services.wakeups import wake_folder

ROOT = Path(__file__).resolve().parents[2]
WRITE = """
import sys, uuid
from services.registry.entities import EpochRecord
from services.registry.unit_of_work import connect_registry
_, uow_factory = connect_registry(sys.argv[1])
job_id = uuid.UUID(sys.argv[2])
with uow_factory() as uow:
    if sys.argv[3] == "job":
        uow.jobs.add(job_id=job_id, model_name="announced", spec={}, queue="cpu")
    else:
        uow.jobs.add_epoch(job_id, EpochRecord(1, 0.5, None, {"loss": 0.5}, 0.01, None))
    uow.commit()
"""


def _write(database_url: str, job_id: uuid.UUID, what: str) -> None:
    subprocess.run([sys.executable, "-c", WRITE, database_url, str(job_id), what], cwd=ROOT, check=True, timeout=60)


def _until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.01)
    return condition()


def test_another_process_writing_a_job_and_its_epoch_is_announced(database_url: str) -> None:
    heard: list[str | None] = []
    lock = threading.Lock()

    def changed(job_id: str | None) -> None:
        with lock:
            heard.append(job_id)

    sqlite = wake_folder(database_url)
    listener = ChangeListener(database_url, changed, poll_s=0.2).start()
    try:
        # Listening: PostgreSQL's listener says "anything may have changed" once LISTEN is in place; SQLite's has its FIFO.
        assert _until(lambda: bool(list(sqlite.iterdir())) if sqlite and sqlite.exists() else bool(heard))
        job_id = uuid.uuid4()
        expected = None if sqlite else str(job_id)  # SQLite's word names no job
        for what in ("job", "epoch"):
            with lock:
                heard.clear()
            _write(database_url, job_id, what)
            assert _until(lambda: expected in heard), f"{what}: heard {heard}"
    finally:
        listener.close()
    assert listener.thread is not None and not listener.thread.is_alive()
    if sqlite:  # its FIFO goes with it: a stopped API's data folder holds none (shutil.copytree refuses named pipes)
        assert list(sqlite.iterdir()) == []


def test_a_quiet_registry_announces_nothing(database_url: str) -> None:
    heard: list[str | None] = []
    listener = ChangeListener(database_url, heard.append, poll_s=0.1).start()
    try:
        time.sleep(1.0)  # ten of its polls
    finally:
        listener.close()
    assert heard in ([], [None])  # PostgreSQL's one "catch up" as LISTEN starts; no word while nothing is written
