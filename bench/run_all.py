"""`make bench`: every benchmark, each printing its figures beside a baseline measured in the same run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "train_loop.py",
    "keras_parity.py",
    "generative.py",
    "studies.py",
    "transfer.py",
    "export_time.py",
    "job_latency.py",
    "big_dataset.py",
    "serve.py",
    "load.py",
    "scale.py",
]

if __name__ == "__main__":
    failed = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        failed |= subprocess.run([sys.executable, str(HERE / name)], cwd=HERE.parent).returncode
    sys.exit(failed)
