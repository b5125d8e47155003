"""Epoch time of one job trained by 2 processes (PyTorch DDP, gloo on the CPU) against 1 process, on this machine.

Both runs train the same example (examples/cnn_digits.json: compute enough per batch for sharding to show) on the
same data through Kiln's own loop and kind (services.training.loop.fit over kinds.supervised, as a job does,
without SQL or checkpoints). The single process takes every core; each of the N processes takes cores / N, as a
multi-process job's ranks do. The figure is the median epoch after the first (which pays start-up), and the median
of that over ROUNDS runs of each, taken in turn; the ratio is
N processes' epoch time over 1 process' (below 1: faster; 1 / N is perfect scaling). With CUDA, the same with
NCCL over the GPUs present (1 GPU against all of them). `measure()` returns the figures; `python bench/scale_ddp.py`
prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE, EPOCHS, ROUNDS = "cnn_digits", 6, 3


def _epoch_seconds(processes: int, device: str) -> float:
    """The median epoch (after the first) of EXAMPLE, trained by `processes` processes on `device` ("cpu" or "cuda")."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "epochs.json"
        rank = [str(Path(__file__).resolve()), "--rank", "--device", device, "--out", str(out)]
        if processes == 1:
            command = [sys.executable, *rank]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *rank]
        env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        seconds = json.loads(out.read_text())
    return statistics.median(seconds[1:])


def _compare(processes: int, device: str) -> dict[str, Any]:
    """The two set-ups run in turn ROUNDS times (so a burst of load elsewhere hits both); the median of each is compared."""
    runs: dict[int, list[float]] = {1: [], processes: []}
    for _ in range(ROUNDS):
        for n in runs:
            runs[n].append(_epoch_seconds(n, device))
    one, many = statistics.median(runs[1]), statistics.median(runs[processes])
    return {"processes": processes, "device": device, "example": EXAMPLE, "epoch_s_1": one, f"epoch_s_{processes}": many,
            "ratio": many / one, "speedup": one / many}  # fmt: skip


def measure() -> dict[str, Any]:
    """{"gloo": 2 CPU processes against 1, "nccl": every GPU against one (only with 2 GPUs or more)}."""
    import torch

    figures = {"gloo": _compare(2, "cpu")}
    if torch.cuda.is_available() and torch.cuda.device_count() >= 2:
        figures["nccl"] = _compare(torch.cuda.device_count(), "cuda")
    return figures


def _train_one_rank(device_name: str, out: Path) -> None:
    """Inside one process (or one rank under torchrun): train EXAMPLE and write every epoch's seconds (rank 0)."""
    import torch
    import torch.distributed as dist

    from services.data.builtins import load_builtin
    from services.spec import JobSpec
    from services.training.distributed import Distributed
    from services.training.kinds.supervised import Supervised
    from services.training.loop import FitOptions, fit

    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if device_name == "cuda" else torch.device("cpu")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks))
    distributed = None
    spec = JobSpec.model_validate(json.loads((ROOT / "examples" / f"{EXAMPLE}.json").read_text()))
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": EPOCHS})})
    if ranks > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        distributed = Distributed(int(os.environ["RANK"]), ranks, seed=spec.training.seed)
    torch.manual_seed(spec.training.seed)
    kind = Supervised(spec, load_builtin(spec.data.dataset), device, distributed=distributed)
    seconds: list[float] = []
    options = FitOptions(epochs=EPOCHS, batch_size=spec.training.batch_size, generator=torch.Generator().manual_seed(0),
                         on_epoch_end=(lambda result: seconds.append(result.duration_s),), distributed=distributed)  # fmt: skip
    fit(kind.trainer, train=kind.train, val=kind.val, options=options)
    if distributed is None or distributed.is_writer:
        out.write_text(json.dumps(seconds))
    if distributed is not None:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)  # one process of a measurement
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank:
        _train_one_rank(args.device, args.out)
        return
    for backend, figures in measure().items():
        n = figures["processes"]
        print(f"{backend}: {EXAMPLE}, {n} processes {figures[f'epoch_s_{n}'] * 1000:.0f} ms/epoch against 1 process "
              f"{figures['epoch_s_1'] * 1000:.0f} ms/epoch: ratio {figures['ratio']:.3f} (1/{n} is perfect scaling), "
              f"speedup {figures['speedup']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
