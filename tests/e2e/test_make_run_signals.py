"""`make run`'s Ctrl-C while a job trains, as a terminal sends it: SIGINT to scripts/run_local.py's process group.

The README: "Ctrl-C stops the API and the worker. A second Ctrl-C forces a worker that is still
finishing a job. A worker that dies is started again, and the job it held resumes from its last epoch."
So one Ctrl-C lets the worker finish the job it holds, then everything exits; a second one ends
the worker at once, leaving the job running in SQL with its checkpoint, and the next `make run`
resumes it after that checkpoint. Either way no process of the stack outlives the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx

from services.registry.entities import Job
from services.registry.unit_of_work import connect_registry
from services.usecases.jobs import get_job
from tests.e2e.helpers import start_make_run, wait_for_job
from tests.e2e.replicas import wait_for
from tests.factories import job_body

# Fast recovery, as in test_faults.py: a killed attempt's heartbeat is stale after 3 s and swept within 0.5 s.
FAST_RECOVERY = {"job_heartbeat_s": "0.5", "job_stale_after_s": "3", "sweep_interval_s": "0.5", "redispatch_after_s": "2"}


def _make_run(var: Path, log: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """`make run` on the embedded defaults in `var`, with fast recovery; returns it ready, with its admin key's headers."""
    proc, url = start_make_run(var, log, **FAST_RECOVERY)
    return proc, url, {"Authorization": f"Bearer {(var / 'api-key').read_text().strip()}"}


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`: the API, the worker and the worker's pool children."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (int(c) for c in (task / "children").read_text().split()):
            found += [child, *_descendants(child)]
    return found


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _none_left(pids: list[int]) -> None:
    """Every process of the stack ends (a pool child whose parent was killed follows it within moments); none is orphaned."""
    wait_for(lambda: not [pid for pid in pids if _alive(pid)], what=f"processes {pids} to end", timeout=15)


def _ctrl_c(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group


def _job_in_sql(var: Path, job_id: str) -> Job:
    """The job's row, read from the SQLite registry directly (the API is down)."""
    engine, uow_factory = connect_registry(f"sqlite:///{var / 'kiln.db'}")
    try:
        return get_job(uuid.UUID(job_id), uow_factory=uow_factory)
    finally:
        engine.dispose()


def _start_job(url: str, headers: dict[str, str], epochs: int, *, until_epoch: int) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        job_id = client.post("/v1/jobs", json=job_body(model_name="interrupted", training={"epochs": epochs, "batch_size": 4})).json()["id"]
        return wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["epoch"] >= until_epoch and j, what="training to start")


def _exits(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"make run did not exit within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}") from None


def test_ctrl_c_during_a_job_lets_the_worker_finish_it_then_everything_exits(tmp_path: Path) -> None:
    var, log = tmp_path / "var", tmp_path / "run.log"
    proc, url, headers = _make_run(var, log)
    job = _start_job(url, headers, epochs=30, until_epoch=2)
    assert job["epoch"] < 30 and job["state"] == "running"
    stack = _descendants(proc.pid)
    assert len(stack) >= 3  # the API, the worker and its training process
    _ctrl_c(proc)
    assert _exits(proc, log, timeout=120) == 0, log.read_text()[-3000:]
    assert "kiln: stopping (Ctrl-C again to force)" in log.read_text()
    _none_left(stack)
    finished = _job_in_sql(var, job["id"])
    assert finished.state == "succeeded" and finished.epoch == 30 and finished.version == 1, finished.error
    assert not list((var / "checkpoints").glob("*.pt"))


def test_a_second_ctrl_c_forces_the_worker_and_the_next_make_run_resumes_the_job(tmp_path: Path) -> None:
    var, log = tmp_path / "var", tmp_path / "run.log"
    proc, url, headers = _make_run(var, log)
    job = _start_job(url, headers, epochs=400, until_epoch=3)
    stack = _descendants(proc.pid)
    _ctrl_c(proc)
    wait_for(lambda: "Ctrl-C again to force" in log.read_text(), what="the first Ctrl-C to be taken")
    _ctrl_c(proc)
    _exits(proc, log, timeout=60)
    _none_left(stack)  # the training process was forced too
    left = _job_in_sql(var, job["id"])
    assert left.state == "running" and left.attempt == 1 and left.checkpoint_epoch >= 3  # resumable, not failed
    assert list((var / "checkpoints").glob(f"{job['id']}.*.pt"))  # its last epoch, on disk
    kept = left.checkpoint_epoch

    again_log = tmp_path / "run-again.log"
    again, url, headers = _make_run(var, again_log)
    try:
        with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
            resumed = wait_for(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["attempt"] == 2 and j["epoch"] > kept and j,
                               what="the job to resume", timeout=120)  # fmt: skip
            assert [e["epoch"] for e in resumed["history"]] == list(range(1, resumed["epoch"] + 1))
            # The epochs up to the checkpoint were not trained again: their records are the first attempt's.
            assert [(e["loss"], e["duration_s"]) for e in resumed["history"][:kept]] == [
                (e.train_loss, e.duration_s) for e in left.history[:kept]
            ]
            # From the last checkpoint on disk: the one SQL names, or the next, when the kill fell between writing a
            # checkpoint and recording its epoch (a checkpoint is written first, so SQL never runs ahead of it).
            found = re.search(rf"job {job['id']} attempt 2 resumes after epoch (\d+)", again_log.read_text())
            assert found and int(found[1]) in (kept, kept + 1), again_log.read_text()[-3000:]
            client.post(f"/v1/jobs/{job['id']}/cancel")
            assert wait_for_job(client, f"/v1/jobs/{job['id']}")["state"] == "cancelled"
    except BaseException:
        _force_stop(again, again_log)  # the job may still be training: one Ctrl-C would wait for it, and hide this failure
        raise
    _ctrl_c(again)
    assert _exits(again, again_log, timeout=60) == 0


def _force_stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Two Ctrl-Cs, as a user in a hurry sends them; whatever goes wrong here must not hide the failure being handled."""
    with contextlib.suppress(Exception):
        _ctrl_c(proc)
        wait_for(lambda: "Ctrl-C again to force" in log.read_text(), what="the first Ctrl-C to be taken")
        _ctrl_c(proc)
        _exits(proc, log, timeout=60)
