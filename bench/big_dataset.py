"""Training on an array larger than the memory budget: rows are streamed from disk in batches.

Writes a 4 GiB float32 .npy (1,048,576 rows x 1,024 features) in a child process, then trains an
MLP on it for one epoch in a fresh child through Kiln's upload loader and pipeline, and reports
that child's peak resident memory above its resident memory just before training (after the
model and the labels are loaded). Target: under 1 GiB above the model and one batch.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS, FEATURES, CHUNK = 1 << 20, 1024, 1 << 15


def write(folder: Path) -> None:
    import numpy as np

    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(ROWS, FEATURES))
    y = np.empty(ROWS, np.int64)
    rng = np.random.default_rng(0)
    for start in range(0, ROWS, CHUNK):
        chunk = rng.standard_normal((CHUNK, FEATURES), dtype=np.float32)
        x[start : start + CHUNK] = chunk
        y[start : start + CHUNK] = chunk[:, 0] + chunk[:, 1] > 0
        x.flush()
    del x
    np.save(folder / "y.npy", y)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def train(folder: Path) -> None:
    import torch

    from services.data.builtins import load_upload
    from services.registry.entities import DatasetRecord
    from services.registry.tables import utcnow
    from services.spec import JobSpec
    from services.training.pipeline import ParityCheck, train_and_export

    torch.set_num_threads(2)
    record = DatasetRecord(uuid.uuid4(), "big", "npz", "f" * 64, "s" * 64, ROWS * FEATURES * 4, ROWS, (FEATURES,), "float32",
                           {"kind": "classification", "class_names": ["0", "1"]}, {}, utcnow())  # fmt: skip
    data = load_upload(record, folder, test_split=0.1, seed=0, max_in_memory_bytes=1 << 30)
    spec = JobSpec.model_validate({
        "model_name": "big", "model": {"input_shape": [FEATURES], "layers": [
            {"type": "Dense", "units": 64, "activation": "relu"}, {"type": "Dense", "units": 2, "activation": "softmax"}]},
        "data": {"dataset": str(record.id), "validation_split": 0.05, "normalization": "standard"},
        "training": {"loss": "sparse_categorical_crossentropy", "epochs": 1, "batch_size": 1024},
    })  # fmt: skip
    before = rss_mib()
    started = time.perf_counter()
    outcome = train_and_export(spec, data, device=torch.device("cpu"), onnx_path=folder / "m.onnx",
                               parity=ParityCheck(256, 1e-4, 1e-4), on_epoch_end=lambda r: None)  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss_before_mib": before, "peak_rss_mib": peak, "seconds": time.perf_counter() - started,
                      "test_accuracy": outcome.metrics["test_accuracy"], "streamed": type(data.x_train).__name__}))  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory(dir=ROOT / "var" if (ROOT / "var").exists() else None) as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "write", str(folder)], check=True)
        size = (folder / "x.npy").stat().st_size / 2**30
        print(f"wrote a {size:.1f} GiB array in {time.perf_counter() - started:.0f} s")
        out = subprocess.run([sys.executable, __file__, "train", str(folder)], check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        above = result["peak_rss_mib"] - result["rss_before_mib"]
        print(f"one epoch over {size:.1f} GiB ({result['streamed']}): {result['seconds']:.0f} s, test accuracy "
              f"{result['test_accuracy']:.3f}; RSS before training {result['rss_before_mib']:.0f} MiB, peak "
              f"{result['peak_rss_mib']:.0f} MiB: {above:.0f} MiB above (target < 1024), "
              f"{above / (size * 1024):.3f} of the array's size")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 3:
        {"write": write, "train": train}[sys.argv[1]](Path(sys.argv[2]))
    else:
        main()
