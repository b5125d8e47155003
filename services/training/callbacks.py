"""Early stopping with Keras' semantics, keeping the best weights seen."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from services.spec import EarlyStoppingSpec
from services.training.optim import monitor_mode


class EarlyStopping:
    """Stops when `monitor` has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, spec: EarlyStoppingSpec) -> None:
        self.spec = spec
        self.mode = monitor_mode(spec.monitor) if spec.mode == "auto" else spec.mode
        self.best: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, Any] | None = None
        self.wait = 0
        self.stopped = False  # the last update said stop (a job resumed after that epoch stops at once)

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        delta = self.spec.min_delta
        return value < self.best - delta if self.mode == "min" else value > self.best + delta

    def update(self, epoch: int, metrics: dict[str, float], network: nn.Module) -> bool:
        """Record this epoch; True when training should stop."""
        value = metrics[self.spec.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_state = copy.deepcopy(network.state_dict())  # the best checkpoint, kept in memory
            return False
        self.wait += 1
        self.stopped = self.wait >= self.spec.patience
        return self.stopped

    def restore(self, network: nn.Module) -> None:
        if self.spec.restore_best_weights and self.best_state is not None:
            network.load_state_dict(self.best_state)
