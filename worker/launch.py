"""Start and supervise torchrun for a multi-process job (services.usecases.ranks asks for it as a RankLauncher).

A Celery prefork child is daemonic and cannot start multiprocessing workers of its own, but it can start a
subprocess: `python -m torch.distributed.run --standalone` (this venv's torchrun) runs `python -m worker.ddp` once
per rank. torchrun is stopped (SIGTERM, then SIGKILL) on a cancel, a lost lease, a time limit or any error here, and
stops its ranks; should this process die without a word, the kernel tells torchrun (PR_SET_PDEATHSIG), and each rank
likewise dies with torchrun (worker.ddp), so no rank trains on unsupervised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from services.usecases.ranks import RankRequest

log = logging.getLogger(__name__)


def torchrun_command(request: RankRequest) -> list[str]:
    """torchrun on this host (a c10d store on a free local port), one `worker.ddp` per rank, none restarted: a rank
    that dies ends the attempt, and the job's next attempt resumes from its last checkpoint."""
    ranks = ["-m", "worker.ddp", "--job", str(request.job_id), "--attempt", str(request.attempt), "--device", request.device,
             "--outcomes", str(request.outcomes)]  # fmt: skip
    if request.resume is not None:
        ranks += ["--resume", str(request.resume)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={request.processes}",
            "--max-restarts=0", "--monitor-interval=0.2", *ranks]  # fmt: skip


class TorchrunLauncher:
    """Runs an attempt's ranks under torchrun and waits for them, asking `should_stop` every `poll_s`."""

    def __init__(self, *, env: dict[str, str] | None = None, grace_s: float = 40.0) -> None:
        self.env = env  # the ranks' environment (None: this process's): their KILN_ settings build their context
        self.grace_s = grace_s  # how long torchrun may take to stop its ranks (its own close timeout is 30 s)

    def __call__(self, request: RankRequest, *, should_stop: Callable[[], bool], poll_s: float) -> int | None:
        torchrun = subprocess.Popen(torchrun_command(request), env=self.env, start_new_session=True,
                                    preexec_fn=lambda: die_with_parent(signal.SIGTERM))  # fmt: skip
        log.info("job %s attempt %d: torchrun (pid %d) started %d training processes", request.job_id, request.attempt, torchrun.pid,
                 request.processes, extra={"job_id": str(request.job_id), "attempt": request.attempt})  # fmt: skip
        try:
            while True:
                try:
                    return torchrun.wait(timeout=poll_s)
                except subprocess.TimeoutExpired:
                    pass
                if should_stop():
                    return None
        finally:
            stop_group(torchrun, grace_s=self.grace_s)


def die_with_parent(sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux' PR_SET_PDEATHSIG): a pool child killed
    by the hard time limit or SIGKILL runs no `finally`, and torchrun, then each rank (which torchrun starts in
    sessions of their own, out of reach of a group kill), must not train on unsupervised."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig, 0, 0, 0)


def stop_group(leader: subprocess.Popen[bytes], *, grace_s: float) -> None:
    """Stop the process group `leader` started: SIGTERM (torchrun stops its ranks), then SIGKILL for whatever is left."""
    try:
        os.killpg(leader.pid, signal.SIGTERM)
    except ProcessLookupError:  # every process of the group has ended
        leader.wait()
        return
    try:
        leader.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # torchrun past its grace, or a rank it could not stop
        os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()
