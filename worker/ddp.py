"""`python -m worker.ddp`: one rank of a multi-process job. torchrun starts it (worker/launch.py), never a person.

Its context is built from the KILN_ settings in its environment, as a pool child's is (worker.context), so it
uses the same registry and the same artifact, dataset and checkpoint stores. torchrun's environment says which
rank it is (RANK, LOCAL_RANK, WORLD_SIZE) and where rank 0's store is (MASTER_ADDR, MASTER_PORT). A rank that
raises writes what it raised for the worker (services.usecases.ranks.write_outcome) and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from services.config import Settings
from services.errors import KilnError
from services.logs import configure_logging
from services.usecases.ranks import write_outcome
from services.usecases.training import train_rank
from worker.context import build_context
from worker.launch import die_with_parent

log = logging.getLogger("kiln.worker.ddp")


def rank_device(first: str, local_rank: int, world_size: int) -> torch.device:
    """The CPU, or the GPU `local_rank` places after `first` (the worker's own): one GPU per rank, none shared."""
    device = torch.device(first)
    if device.type != "cuda":
        return device
    gpus = torch.cuda.device_count()
    if world_size > gpus:
        raise KilnError(f"distributed.processes is {world_size}, but this worker's host has {gpus} GPU(s): one process per GPU")
    return torch.device("cuda", ((device.index or 0) + local_rank) % gpus)


def main(argv: list[str] | None = None) -> int:
    parent = os.getppid()
    die_with_parent(signal.SIGKILL)  # torchrun gone (killed with its pool child): so is this rank
    if os.getppid() != parent:  # it went before the line above took effect
        return 1
    args = _arguments(argv)
    settings = Settings()
    configure_logging(level=settings.log_level, json_lines=settings.log_format == "json")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    failed = False
    try:
        device = rank_device(args.device, int(os.environ["LOCAL_RANK"]), world_size)
        # The threads one training process of this worker has (KILN_TORCH_THREADS, or cores / concurrency), shared out.
        threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_concurrency)
        torch.set_num_threads(max(1, threads // world_size))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # Ranks wait for rank 0 while it validates, checkpoints (to S3 too) and fetches the data: NCCL's default 10 min
        # would end a long wait; a dead peer is noticed by torchrun within its monitor interval anyway.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None,
                                timeout=timedelta(minutes=60))  # fmt: skip
        train_rank(args.job, args.attempt, build_context(settings, device), resume=args.resume, rank=rank, world_size=world_size)
    except BaseException as exc:
        failed = True
        log.error("job %s attempt %d, rank %d of %d: %s", args.job, args.attempt, rank, world_size, exc, exc_info=True,
                  extra={"job_id": str(args.job), "attempt": args.attempt})  # fmt: skip
        write_outcome(args.outcomes, rank, exc)
        return 1
    finally:
        if dist.is_initialized() and not failed:  # after a failure it may block on peers that are gone (NCCL)
            dist.destroy_process_group()
    return 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.ddp", description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=uuid.UUID, required=True)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--device", default="cpu", help="cpu, or the first GPU of the ranks' (cuda:N)")
    parser.add_argument("--outcomes", type=Path, required=True, help="the folder a rank that raises writes to")
    parser.add_argument("--resume", type=Path, help="the checkpoint every rank restores from")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
