"""Training budgets: a spec's parameter count and an estimate of one batch's training memory, against the limits.

Checked at submission, so a model that would swap a worker or be killed by the kernel is a 422,
and again by the worker before it allocates anything (the limits may have changed since).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

from services.errors import InvalidSpec
from services.spec.base import fields_under
from services.spec.graph import describe, resolve
from services.spec.job import JobSpec, OptimizerSpec
from services.spec.model import ModelSpec
from services.spec.shapes import infer_layers

BYTES_PER_VALUE = 4  # float32 weights, gradients, optimizer state and activations


@dataclass(frozen=True)
class Budget:
    """The most a job may need: KILN_MAX_PARAMETERS, KILN_MAX_TRAINING_MEMORY_MB and KILN_MAX_TRAINING_PROCESSES."""

    max_parameters: int
    max_training_memory_mb: int
    max_training_processes: int = 1  # where no setting is given: one process, in the worker's own


@dataclass(frozen=True)
class Footprint:
    """What a network needs up to (and including) one of its layers."""

    parameters: int
    memory_bytes: int  # weights, gradients, optimizer state, and one batch's activations

    @property
    def memory_mb(self) -> int:
        return math.ceil(self.memory_bytes / 2**20)


def optimizer_state_copies(optimizer: OptimizerSpec) -> int:
    """Values torch's optimizer keeps per parameter: Adam's two moments, a momentum buffer, Adagrad's sums."""
    if optimizer.name in ("adam", "adamw"):
        return 2
    if optimizer.name == "rmsprop":
        return 2 if optimizer.momentum > 0 else 1  # the squares' average, and a momentum buffer
    if optimizer.name == "adagrad":
        return 1
    return 1 if optimizer.momentum > 0 else 0  # plain SGD keeps nothing


def networks(spec: JobSpec) -> list[tuple[ModelSpec, str, OptimizerSpec]]:
    """The networks a job trains, each with the field it is given at and the optimizer that trains it."""
    if spec.kind != "gan":
        return [(spec.network, "model", spec.training.optimizer)]
    gan, training = spec.gan, spec.training
    return [(gan.generator, "model.generator", training.optimizer),
            (gan.discriminator, "model.discriminator", training.discriminator_optimizer or training.optimizer)]  # fmt: skip


def footprints(spec: JobSpec) -> list[Footprint]:
    """The running footprint layer by layer: entry i covers layers 0..i (the last entry is the whole job: a GAN's
    discriminator's layers follow its generator's, both being in memory at once)."""
    running: list[Footprint] = []
    batch = spec.training.batch_size
    for position, (model, field, optimizer) in enumerate(networks(spec)):
        batch_values = batch * (2 if position == 1 else 1)  # a discriminator step holds a real and a generated batch
        base = running[-1] if running else Footprint(0, 0)
        values_per_parameter = 2 + optimizer_state_copies(optimizer)  # the weight, its gradient, the state
        with fields_under(field):
            layers = infer_layers(model)
        parameters = list(accumulate(layer.parameters for layer in layers))
        activations = list(accumulate((layer.activations for layer in layers), initial=resolve(model).input_values))[1:]
        running += [Footprint(base.parameters + p, base.memory_bytes + BYTES_PER_VALUE * (p * values_per_parameter + a * batch_values))
                    for p, a in zip(parameters, activations, strict=True)]  # fmt: skip
    return running


def check_budget(spec: JobSpec, budget: Budget) -> Footprint:
    """The whole job's footprint; InvalidSpec naming the layer that first crosses a limit, its figure and the limit (or
    `distributed.processes`, when the job asks for more processes than the limit, or for several where it cannot)."""
    check_processes(spec, budget)
    running = footprints(spec)
    layers = [(layer, f"{field}.layers[{index}]", index) for model, field, _ in networks(spec) for index, layer in enumerate(model.layers)]
    for position, ((layer, field, index), reached) in enumerate(zip(layers, running, strict=True)):
        name = describe(index, layer)
        if reached.parameters > budget.max_parameters:
            own = reached.parameters - (running[position - 1].parameters if position else 0)
            message = f"{name}: {_parameters(own, reached.parameters, budget)}, over KILN_MAX_PARAMETERS={budget.max_parameters:,}"
            raise InvalidSpec(message, field=field)
        if reached.memory_mb * spec.processes > budget.max_training_memory_mb:  # each process holds a whole copy
            raise InvalidSpec(f"{name}: {_memory(spec, reached, budget)}", field=field)
    return running[-1]


def check_processes(spec: JobSpec, budget: Budget) -> None:
    """`distributed.processes` within KILN_MAX_TRAINING_PROCESSES, and only where every process can train the same network."""
    processes, field = spec.processes, "distributed.processes"
    if processes > budget.max_training_processes:
        raise InvalidSpec(f"{processes} training processes asked, over KILN_MAX_TRAINING_PROCESSES={budget.max_training_processes}",
                          field=field)  # fmt: skip
    if processes > 1 and spec.kind == "gan":
        raise InvalidSpec("a GAN trains in one process: drop distributed, or set processes to 1", field=field)
    if processes > 1 and spec.training.fine_tune is not None:  # DDP syncs only the parameters that train from the start
        raise InvalidSpec("training.fine_tune unfreezes layers mid-training, which several processes cannot share: "
                          "drop distributed, or set processes to 1", field=field)  # fmt: skip


def _parameters(own: int, reached: int, budget: Budget) -> str:
    """The layer's own count when it alone is over; else the total it brings the model to."""
    return f"{own:,} parameters" if own > budget.max_parameters else f"{own:,} parameters bring the model to {reached:,}"


def _memory(spec: JobSpec, reached: Footprint, budget: Budget) -> str:
    optimizer, batch = spec.training.optimizer.name, spec.training.batch_size
    each = f" in each of {spec.processes} processes ({reached.memory_mb * spec.processes:,} MB in all)" if spec.processes > 1 else ""
    return (
        f"training needs about {reached.memory_mb:,} MB by this layer{each} (weights, gradients and {optimizer} state "
        f"of {reached.parameters:,} parameters, activations of a batch of {batch}), "
        f"over KILN_MAX_TRAINING_MEMORY_MB={budget.max_training_memory_mb:,}"
    )
