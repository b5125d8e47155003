"""`"kind": "supervised"`: one network learns to predict the targets (labels, or values for a regressor)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from services.data.arrays import RowView
from services.data.builtins import LoadedDataset
from services.errors import TrainingFailed
from services.spec import JobSpec, final_activation, has_dynamic_time_axis
from services.spec.transfer import fine_tuned_layers
from services.training.augment import Augmenter
from services.training.builder import Normalize, build_network, parameter_count, thaw
from services.training.callbacks import EarlyStopping
from services.training.distributed import Distributed
from services.training.export import example_input, export_onnx, onnx_parity
from services.training.kinds.base import Exported, ParityCheck, autocast_dtype
from services.training.loop import EpochEnd, Split, autocast
from services.training.objectives import Objective, compute_metrics
from services.training.optim import LrSchedule, make_clipper, make_optimizer
from services.training.preprocess import annotate_onnx
from services.training.rows import feeds, normalize, prepare, row_layout, split

Transform = Callable[[torch.Tensor], torch.Tensor]  # changes a training batch; has a `generator` a checkpoint keeps


class SupervisedTrainer:
    """Predict the targets: per batch one forward, one loss (plus the regularizers' penalty) and one optimizer step."""

    def __init__(self, model: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer, *, metrics: list[str],
                 schedule: LrSchedule, clip: Callable[[], None] | None = None, stopper: EarlyStopping | None = None,
                 autocast: torch.dtype | None = None, transforms: tuple[Transform, ...] = (),
                 penalty: Callable[[], torch.Tensor | None] | None = None,
                 constrain: Callable[[], None] | None = None, epoch_start: Callable[[int], None] | None = None,
                 distributed: Distributed | None = None) -> None:  # fmt: skip
        self.model, self.objective, self.optimizer, self.metrics, self.schedule = model, objective, optimizer, metrics, schedule
        self.clip, self.stopper, self.autocast, self.transforms = clip, stopper, autocast, transforms
        self.penalty, self.constrain, self.epoch_start = penalty, constrain, epoch_start
        self.distributed = distributed
        # Steps run through DDP where several processes train (it averages the gradients); everything else, evaluation
        # and early stopping's copies included, uses the model itself, so no rank waits on another outside a step.
        self.step_model = distributed.wrap(model) if distributed is not None else model
        self.figures: tuple[str, ...] = ("loss", "regularization_loss") if penalty is not None else ("loss",)
        self._outputs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._learning_rate = schedule.learning_rate

    def begin_epoch(self, epoch: int) -> None:
        if self.epoch_start is not None:  # a phase change (fine-tuning) comes before the epoch's mode and learning rate
            self.epoch_start(epoch)
        self.step_model.train()
        self._outputs, self._targets, self._learning_rate = [], [], self.schedule.learning_rate

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:  # training batches only, never validation or test
            x = transform(x)
        with autocast(x, self.autocast):
            output = self.step_model(x)
            loss = self.objective.loss(output.float(), y)
        penalty = self.penalty() if self.penalty is not None else None
        if penalty is not None:
            loss = loss + penalty
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            self.clip()
        self.optimizer.step()
        if self.constrain is not None:
            self.constrain()
        self.schedule.after_batch()
        self._outputs.append(output.detach())
        self._targets.append(y)
        if self.penalty is None:
            return loss.detach().reshape(1)
        return torch.stack([loss.detach(), penalty.detach() if penalty is not None else torch.zeros_like(loss.detach())])

    def end_epoch(self, epoch: int, means: dict[str, float], val: Split | None) -> EpochEnd:
        metrics = dict(means)
        if "regularization_loss" in metrics:  # Keras' loss includes the regularizers; their share and the data's are reported apart
            metrics["data_loss"] = metrics["loss"] - metrics["regularization_loss"]
        outputs, targets = torch.cat(self._outputs).float(), torch.cat(self._targets)
        if self.distributed is not None:  # the training figures cover every rank's shard (the means are summed by the loop)
            outputs, targets = self.distributed.gather(outputs), self.distributed.gather(targets)
        metrics |= compute_metrics(self.objective, self.metrics, outputs, targets)
        self._outputs, self._targets = [], []
        if val is not None and len(val) and (self.distributed is None or self.distributed.is_writer):  # the whole split, once
            metrics |= {f"val_{k}": v for k, v in evaluate(self.model, self.objective, val, self.metrics, self.autocast).items()}
        metrics["learning_rate"] = self._learning_rate
        if self.distributed is not None:  # rank 0's figures everywhere: every rank's schedule and stopper decide alike
            metrics = self.distributed.from_writer(metrics)
        self.schedule.after_epoch(metrics)
        stop = self.stopper.update(epoch, metrics, self.model) if self.stopper else False
        return EpochEnd(metrics, stop)

    def finish(self) -> None:
        if self.stopper:
            self.stopper.restore(self.model)


@torch.no_grad()
def evaluate(network: nn.Module, objective: Objective, data: Split, metrics: list[str],
             autocast_to: torch.dtype | None = None, batch_size: int = 1024) -> dict[str, float]:  # fmt: skip
    """Loss and metrics over `data`, in eval mode (dropout off, batch norm on running statistics)."""
    network.eval()
    outputs = []
    for x, _ in data.batches(None, batch_size):
        with autocast(x, autocast_to):
            outputs.append(network(x).float())
    output = torch.cat(outputs)
    return {"loss": float(objective.loss(output, data.y))} | compute_metrics(objective, metrics, output, data.y)


class Supervised:
    """One network, trained on (input, target) pairs; exported with its output activation, labels and preprocessing."""

    def __init__(self, spec: JobSpec, data: LoadedDataset, device: torch.device, vocabulary: list[str] | None = None,
                 distributed: Distributed | None = None) -> None:  # fmt: skip
        self.spec, self.task = spec, spec.task
        training = spec.training
        self.network = network = build_network(spec.network, fuse_output_activation=not training.is_regression)
        shape, dtype = row_layout(network)
        # A lifted softmax/sigmoid leaves logits; so does a last layer with no squashing activation ("linear" is read as logits).
        from_logits = network.outputs_logits or final_activation(spec.network) not in ("softmax", "sigmoid")
        self.objective = objective = Objective(training.loss, from_logits=from_logits, n_classes=data.info.n_classes)
        self.prepared = prepared = prepare(spec, data, stratify=objective.is_classification, vocabulary=vocabulary)
        if spec.data.normalization != "none":
            prepared.normalization = normalize(network, spec.data.normalization, prepared.fit)
        reconstruct = spec.data.targets == "inputs"
        make = lambda x, y: split(x, y, shape, objective, device, dtype=dtype, targets_are_inputs=reconstruct)  # noqa: E731
        self.train, self.test_split = make(prepared.fit, prepared.y_fit), make(prepared.test, prepared.y_test)
        self.val = make(prepared.val, prepared.y_val) if len(prepared.y_val) else None
        network.to(device)
        if device.type == "cuda":
            network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # conv weights as cuDNN prefers
        self.optimizer = make_optimizer(training.optimizer, [p for p in network.parameters() if p.requires_grad])
        self.labels = (list(data.info.class_names) or None) if self.task == "classifier" else None
        self.transforms = self._transforms()
        rows = distributed.shard_size(len(self.train)) if distributed is not None else len(self.train)
        self.trainer = SupervisedTrainer(
            network.trainable(), objective, self.optimizer, metrics=training.metric_names,
            schedule=LrSchedule(training.lr_schedule, self.optimizer, epochs=training.epochs,
                                batches_per_epoch=math.ceil(rows / training.batch_size)),
            clip=make_clipper(training.optimizer, list(network.parameters())),
            stopper=EarlyStopping(training.early_stopping) if training.early_stopping else None,
            autocast=autocast_dtype(device), transforms=self.transforms,
            penalty=network.penalty if network.regularized else None, constrain=network.constrain if network.constrained else None,
            epoch_start=self._fine_tune if training.fine_tune is not None else None, distributed=distributed,
        )  # fmt: skip
        self.phase = 0  # 1 once fine-tuning has unfrozen the base
        self.unfrozen: list[str] = []  # the base layers fine-tuning unfroze

    def _fine_tune(self, epoch: int) -> None:
        """Keras' recipe: after `after_epoch` epochs, the base's layers (all, or the last N with weights) train too, at
        their own learning rate, in a parameter group of their own; the head's group keeps its rate."""
        fine_tune = self.spec.training.fine_tune
        if fine_tune is not None and self.phase == 0 and epoch > fine_tune.after_epoch:
            self._unfreeze()

    def _unfreeze(self) -> None:
        fine_tune = self.spec.training.fine_tune
        assert fine_tune is not None
        self.unfrozen = fine_tuned_layers(self.spec)
        params = [p for name in self.unfrozen for p in thaw(self.network.body.layers[name])]
        self.optimizer.add_param_group({"params": params, "lr": fine_tune.learning_rate})
        self.phase = 1

    def _transforms(self) -> tuple[Transform, ...]:
        augmentation = self.spec.data.augmentation
        return (Augmenter(augmentation, seed=self.spec.training.seed),) if augmentation is not None else ()

    def state_dict(self) -> dict[str, Any]:
        scheduler, stopper = self.trainer.schedule.scheduler, self.trainer.stopper
        return {
            "model": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "transforms": [t.generator.get_state() for t in self.transforms],  # type: ignore[attr-defined]
            "stopper": _stopper_state(stopper) if stopper is not None else {},
            "phase": self.phase,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["model"])
        if state.get("phase", 0) == 1 and self.phase == 0:  # the base was unfrozen: its parameter group must exist to be restored
            self._unfreeze()
        self.optimizer.load_state_dict(state["optimizer"])
        if self.trainer.schedule.scheduler is not None:
            self.trainer.schedule.scheduler.load_state_dict(state["scheduler"])
        for transform, generator in zip(self.transforms, state["transforms"], strict=True):
            transform.generator.set_state(generator)  # type: ignore[attr-defined]
        stopper, saved = self.trainer.stopper, state["stopper"]
        if stopper is not None and saved:
            stopper.best, stopper.best_epoch, stopper.wait, stopper.stopped = (
                saved["best"],
                saved["best_epoch"],
                saved["wait"],
                saved["stopped"],
            )
            device = next(self.network.parameters()).device
            best = saved["best_state"]
            stopper.best_state = {k: v.to(device) for k, v in best.items()} if best is not None else None

    def test(self) -> dict[str, float]:
        tested = evaluate(self.trainer.model, self.objective, self.test_split, self.trainer.metrics, self.trainer.autocast)
        stopper = self.trainer.stopper
        extra = {"best_epoch": float(stopper.best_epoch)} if stopper else {}
        return {f"test_{k}": v for k, v in tested.items()} | extra | {"parameters": float(parameter_count(self.network))}

    def load_base(self, state: dict[str, torch.Tensor], input_names: list[str]) -> None:
        base = self.spec.network.base
        assert base is not None and base.layers is not None, "a base is resolved at submission"
        own = self.network.state_dict()
        with torch.no_grad():
            for name in base.layers:
                for key, value in _matched(name, state, own).items():
                    own[key].copy_(value)  # in place: the optimizer holds these very tensors
        if self.spec.data.normalization == "none":  # the base's statistics come along, unless the job names its own
            device = next(self.network.parameters()).device
            for position, item in enumerate(self.network.layout):
                where = input_names.index(item.name) if item.name in input_names else -1
                shift, scale = state.get(f"normalize.{where}.shift"), state.get(f"normalize.{where}.scale")
                if shift is not None and scale is not None:
                    self.network.normalize[position] = Normalize(shift.clone(), scale.clone()).to(device)
                    self.prepared.normalization = {"mode": "from_base", "base": f"{base.model}/{base.version}"}

    def weights(self) -> dict[str, torch.Tensor]:
        return dict(self.network.state_dict())

    def anomaly(self) -> dict[str, Any] | None:
        """What the version keeps to tell anomalies (autoencoders)."""
        return None

    def export(self, path: Path, parity: ParityCheck) -> Exported:
        spec, network, prepared = self.spec, self.network, self.prepared
        anomaly = self.anomaly()
        input_names, output_names = spec.network.export_names
        examples = [example_input(i.shape, "int64" if i.dtype == torch.int64 else "float32") for i in network.layout]
        export_onnx(network, examples=examples, path=path, input_names=input_names, output_names=output_names,
                    dynamic_time=has_dynamic_time_axis(spec.network))  # fmt: skip
        metadata = {"labels": self.labels, "preprocessing": prepared.preprocessing, "normalization": prepared.normalization,
                    "task": self.task, "anomaly": anomaly}  # fmt: skip
        annotate_onnx(path, {key: value for key, value in metadata.items() if value})
        rows = min(parity.rows, len(prepared.y_test))
        test = prepared.test
        held_out = test.read(np.arange(rows)) if isinstance(test, RowView) else test[:rows]
        _, dtype = row_layout(network)
        fed = dict(zip(input_names, feeds(network, held_out.astype(dtype)), strict=True))
        agreement = onnx_parity(network, path=path, feeds=fed, atol=parity.atol, rtol=parity.rtol)
        if not agreement.agrees:
            raise TrainingFailed(
                f"ONNX parity check failed on output '{agreement.output}': max abs diff {agreement.max_abs_diff:.3g} > "
                f"{parity.atol:g} (+ rtol {parity.rtol:g})"
            )
        return Exported(agreement.max_abs_diff, self.labels, prepared.preprocessing, anomaly)


def _matched(name: str, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Layer `name`'s base tensors by the child's keys. A layer whose softmax was lifted into the base's head is stored
    bare (`name.weight`) where the child wraps it with its activation (`name.0.weight`), or the other way round."""
    prefix = f"body.layers.{name}."
    theirs = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    mine = [k[len(prefix) :] for k in own if k.startswith(prefix)]
    for rename in (lambda s: s, lambda s: f"0.{s}", lambda s: s.removeprefix("0.")):
        mapped = {rename(suffix): value for suffix, value in theirs.items()}
        if set(mapped) == set(mine) and all(mapped[s].shape == own[prefix + s].shape for s in mine):
            return {prefix + suffix: value for suffix, value in mapped.items()}
    raise TrainingFailed(f"the base's weights do not fit its layer '{name}': it has {sorted(theirs)}, the model {sorted(mine)}")


def _stopper_state(stopper: EarlyStopping) -> dict[str, Any]:
    best = {k: v.detach().cpu() for k, v in stopper.best_state.items()} if stopper.best_state is not None else None
    return {"best": stopper.best, "best_epoch": stopper.best_epoch, "wait": stopper.wait, "stopped": stopper.stopped, "best_state": best}
