"""Optimizers, gradient clipping and learning-rate schedules from their Keras-named specs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from services.spec import OptimizerSpec, ScheduleSpec
from services.spec.job import monitor_mode


def make_optimizer(spec: OptimizerSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    decay = spec.weight_decay if spec.weight_decay is not None else (0.004 if spec.name == "adamw" else 0.0)
    lr, betas = spec.learning_rate, (spec.beta_1, spec.beta_2)
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=decay)
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=spec.epsilon, weight_decay=decay)
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=spec.rho, eps=spec.epsilon, momentum=spec.momentum, weight_decay=decay)
    if spec.name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=spec.epsilon, initial_accumulator_value=0.1, weight_decay=decay)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=spec.epsilon, weight_decay=decay)


def make_clipper(spec: OptimizerSpec, params: list[nn.Parameter]) -> Callable[[], None] | None:
    """Keras' clipnorm (each parameter's gradient on its own) and clipvalue, applied before each step."""
    if spec.clipnorm is None and spec.clipvalue is None:
        return None

    def clip() -> None:
        if spec.clipvalue is not None:
            nn.utils.clip_grad_value_(params, spec.clipvalue)
        if spec.clipnorm is not None:
            for param in params:
                nn.utils.clip_grad_norm_([param], spec.clipnorm)

    return clip


class LrSchedule:
    """Steps a torch scheduler at the cadence its kind needs: per batch (one_cycle) or per epoch."""

    def __init__(self, spec: ScheduleSpec, optimizer: torch.optim.Optimizer, *, epochs: int, batches_per_epoch: int) -> None:
        self.spec = spec
        self.per_batch = spec.name == "one_cycle"
        lr = optimizer.param_groups[0]["lr"]
        sched = torch.optim.lr_scheduler
        self.scheduler: sched.LRScheduler | sched.ReduceLROnPlateau | None = {
            "constant": lambda: None,
            "step": lambda: sched.StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma),
            "cosine": lambda: sched.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=spec.min_learning_rate),
            "one_cycle": lambda: sched.OneCycleLR(
                optimizer, max_lr=lr, total_steps=epochs * batches_per_epoch, pct_start=spec.pct_start
            ),
            "reduce_on_plateau": lambda: sched.ReduceLROnPlateau(
                optimizer, mode=monitor_mode(spec.monitor), factor=spec.factor, patience=spec.patience,
                threshold=spec.min_delta, threshold_mode="abs", min_lr=spec.min_learning_rate,
            ),
        }[spec.name]()  # fmt: skip
        self.optimizer = optimizer

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def after_batch(self) -> None:
        if self.per_batch and self.scheduler is not None:
            self.scheduler.step()  # type: ignore[call-arg]

    def after_epoch(self, metrics: dict[str, float]) -> None:
        if self.per_batch or self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(metrics[self.spec.monitor])
        else:
            self.scheduler.step()
