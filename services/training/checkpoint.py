"""Per-epoch checkpoints: what a re-delivered job needs to go on as if it had never stopped.

A checkpoint holds the job kind's state (its weights, optimizers, schedules, early stopping and
the generators it draws from: augmentation, noise, a GAN's latent vectors), the generators every kind
shares (torch's, for dropout and initialisation, and the shuffling order) and the epoch history.
It is written to a temporary file, flushed and renamed over the last one, so a crash leaves
the previous checkpoint or the new one, never half of one. It is read with
`torch.load(weights_only=True)`: tensors, numbers, strings and containers only, no pickled code.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from services.training.kinds.base import JobKind
from services.training.loop import EpochResult

# 4: an epoch without an image holds None, not an empty tensor (a worker that reads only 3 starts such a job over rather
# than fail on it); 3: the kind's own state (one network or a GAN's two) under "kind"; 2: weights keyed by layer name
FORMAT = 4
READABLE = (3, 4)


def capture(epoch: int, history: list[EpochResult], kind: JobKind, shuffle: torch.Generator) -> dict[str, Any]:
    """The state after `epoch` (1-based), everything on the CPU."""
    return {
        "format": FORMAT,
        "epoch": epoch,
        "history": [_epoch(r, image=position == len(history) - 1) for position, r in enumerate(history)],
        "kind": kind.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "shuffle": shuffle.get_state(),
        },
    }


def _epoch(result: EpochResult, *, image: bool) -> dict[str, Any]:
    """One epoch's record; only the last keeps its image (SQL holds the others: a resume re-adds at most the last). No
    image is None, not an empty tensor: torch.save pays about 30 us a tensor, and the history grows with every epoch."""
    kept = result.image if image else None
    image_bytes = torch.frombuffer(bytearray(kept), dtype=torch.uint8) if kept else None
    return {"epoch": result.epoch, "metrics": result.metrics, "duration_s": result.duration_s, "samples": result.samples,
            "warnings": list(result.warnings), "image": image_bytes, "stopped": result.stopped}  # fmt: skip


def restore(state: dict[str, Any], kind: JobKind, shuffle: torch.Generator) -> list[EpochResult]:
    """Put `state` back into a freshly built kind and the shuffling generator; return the epochs it covers."""
    if state.get("format") not in READABLE:
        raise ValueError(f"checkpoint format {state.get('format')!r}, expected one of {READABLE}")
    kind.load_state_dict(state["kind"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    shuffle.set_state(rng["shuffle"])
    return history(state)


def history(state: dict[str, Any]) -> list[EpochResult]:
    """The epochs a checkpoint covers, as the training loop reported them."""
    return [
        EpochResult(h["epoch"], h["metrics"], h["duration_s"], h["samples"], tuple(h["warnings"]),
                    _image(h["image"]), h["stopped"])
        for h in state["history"]
    ]  # fmt: skip


def _image(image: torch.Tensor | None) -> bytes | None:
    return image.numpy().tobytes() if image is not None and len(image) else None  # an empty tensor: an older checkpoint


def save(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically: a temporary file in the same folder, flushed, then renamed."""
    _write(path, lambda out: torch.save(state, out))


def snapshot(state: dict[str, Any]) -> bytes:
    """`state` serialised now, as `save` would write it: the tensors it refers to may change after this returns."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def write(data: bytes, path: Path) -> None:
    """A `snapshot` written to `path` atomically, as `save` writes."""
    _write(path, lambda out: out.write(data))


def size(state: dict[str, Any]) -> int:
    """The bytes of the tensors in `state`, about what its checkpoint weighs."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(size(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(size(v) for v in state)
    return 0


def _write(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique across hosts sharing the folder
    try:
        with open(temporary, "wb") as out:
            fill(out)
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
