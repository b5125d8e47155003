"""Per-epoch checkpoints: what a re-delivered job needs to go on as if it had never stopped.

A checkpoint holds the weights, the optimizer's and the schedule's state, every random generator
training draws from (dropout, shuffling, augmentation), early stopping's state and the epoch
history. It is written to a temporary file, flushed and renamed over the last one, so a crash leaves
the previous checkpoint or the new one, never half of one. It is read with
`torch.load(weights_only=True)`: tensors, numbers, strings and containers only, no pickled code.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.training.augment import Augmenter, Corrupter
from services.training.callbacks import EarlyStopping
from services.training.loop import EpochResult, FitOptions

FORMAT = 2  # 2: weights keyed by layer name (body.layers.<name>), normalisation per input


def capture(epoch: int, history: list[EpochResult], network: nn.Module, optimizer: torch.optim.Optimizer,
            options: FitOptions) -> dict[str, Any]:  # fmt: skip
    """The state after `epoch` (1-based), everything on the CPU."""
    stopper = options.stopper
    scheduler = options.schedule.scheduler
    return {
        "format": FORMAT,
        "epoch": epoch,
        "history": [{"epoch": r.epoch, "metrics": r.metrics, "duration_s": r.duration_s, "samples": r.samples} for r in history],
        "model": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "shuffle": options.generator.get_state(),
            "augment": options.augment.generator.get_state()
            if isinstance(options.augment, Augmenter | Corrupter)
            else torch.empty(0, dtype=torch.uint8),
        },
        "stopper": _stopper_state(stopper) if stopper is not None else {},
    }


def _stopper_state(stopper: EarlyStopping) -> dict[str, Any]:
    best = {k: v.detach().cpu() for k, v in stopper.best_state.items()} if stopper.best_state is not None else None
    return {"best": stopper.best, "best_epoch": stopper.best_epoch, "wait": stopper.wait, "stopped": stopper.stopped, "best_state": best}


def restore(state: dict[str, Any], network: nn.Module, optimizer: torch.optim.Optimizer, options: FitOptions) -> list[EpochResult]:
    """Put `state` back into a freshly built network, optimizer and options; return the epochs it covers."""
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r}, expected {FORMAT}")
    network.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if options.schedule.scheduler is not None:
        options.schedule.scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    options.generator.set_state(rng["shuffle"])
    if isinstance(options.augment, Augmenter | Corrupter) and len(rng["augment"]):
        options.augment.generator.set_state(rng["augment"])
    if options.stopper is not None and state["stopper"]:
        saved = state["stopper"]
        stopper = options.stopper
        stopper.best, stopper.best_epoch, stopper.wait, stopper.stopped = (
            saved["best"],
            saved["best_epoch"],
            saved["wait"],
            saved["stopped"],
        )
        device = next(network.parameters()).device
        best = saved["best_state"]
        options.stopper.best_state = {k: v.to(device) for k, v in best.items()} if best is not None else None
    return history(state)


def history(state: dict[str, Any]) -> list[EpochResult]:
    """The epochs a checkpoint covers, as the training loop reported them."""
    return [EpochResult(h["epoch"], h["metrics"], h["duration_s"], h["samples"]) for h in state["history"]]


def save(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically: a temporary file in the same folder, flushed, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique across hosts sharing the folder
    try:
        with open(temporary, "wb") as out:
            torch.save(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def load(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state
