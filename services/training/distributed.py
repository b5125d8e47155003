"""One process of a multi-process job (PyTorch DDP on one host): which rank it is, and what the loop asks of the others.

The training loop and the kinds take a `Distributed` where a job runs on several processes, and None where it
runs in one (then nothing here is used). Every rank trains its shard of each epoch's rows, chosen by a
`DistributedSampler` seeded with the job's seed; gradients are averaged by DDP; figures are summed across
ranks. Rank 0 alone writes (checkpoints, epochs, the export): it is the `is_writer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler


@dataclass(frozen=True)
class Distributed:
    """This rank of an initialised process group (NCCL on GPUs, gloo on CPUs)."""

    rank: int
    world_size: int
    seed: int  # the job's `training.seed`: every rank draws the same permutation, and takes its own share of it

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def shard_size(self, rows: int) -> int:
        """Rows each rank trains on per epoch (the sampler repeats up to world_size - 1 rows so that all are equal)."""
        return math.ceil(rows / self.world_size)

    def shard(self, rows: int, epoch: int) -> torch.Tensor:
        """This rank's rows of epoch `epoch`, in training order; the same for the same seed and epoch, so a resumed
        attempt shuffles as the first one did."""
        rows_only: Any = range(rows)  # all the sampler reads of a dataset is its length
        sampler: DistributedSampler[int] = DistributedSampler(rows_only, num_replicas=self.world_size, rank=self.rank, seed=self.seed)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.int64)

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` with its gradients averaged across ranks at every backward (it starts from rank 0's weights)."""
        device = next(module.parameters()).device
        return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks (a copy: the argument is left as it is)."""
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's `tensor` (the same shape on each), concatenated along the first axis in rank order."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def from_writer(self, value: Any) -> Any:
        """Rank 0's `value` on every rank, so every rank makes the same decision from it (early stopping, schedules)."""
        box = [value if self.is_writer else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()
