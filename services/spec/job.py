"""Pydantic models of a training job's body: its data, its training, and which kind of job it is."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from services.spec.base import Strict
from services.spec.model import ModelSpec

LossName = Literal[
    "mse", "mae", "huber", "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"
]  # fmt: skip
MetricName = Literal["accuracy", "precision", "recall", "f1", "mae", "rmse"]
DeviceName = Literal["auto", "cpu", "gpu"]
REGRESSION_LOSSES = ("mse", "mae", "huber")


class AugmentationSpec(Strict):
    """Random changes to training images (never to validation or test): the seeds' remedy for overfitting."""

    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    shift: float = Field(default=0.0, ge=0.0, le=0.5)  # up to this fraction of the width/height
    rotation: float = Field(default=0.0, ge=0.0, le=180.0)  # up to this many degrees either way
    zoom: float = Field(default=0.0, ge=0.0, le=0.9)  # scale by up to 1 +/- zoom


class NoiseSpec(Strict):
    """How a denoising autoencoder's training inputs are corrupted (its targets stay clean): one of the two."""

    gaussian: float | None = Field(default=None, gt=0.0, le=100.0)  # add N(0, gaussian^2) to every value
    masking: float | None = Field(default=None, gt=0.0, lt=1.0)  # set each value to 0 with this probability

    @model_validator(mode="after")
    def _one(self) -> NoiseSpec:
        if (self.gaussian is None) == (self.masking is None):
            raise ValueError('give one of gaussian (a standard deviation) or masking (a probability), e.g. {"gaussian": 0.3}')
        return self


class TextSpec(Strict):
    """Tokenisation of a text dataset: a word vocabulary built from the training split."""

    max_tokens: int = Field(default=10_000, ge=3, le=1_000_000)  # vocabulary size, padding and unknown included
    sequence_length: int = Field(default=64, ge=1, le=10_000)


class DataSpec(Strict):
    """Which dataset to train on, how to generate it (generated built-ins), what to hold out."""

    dataset: str = Field(min_length=1, max_length=128)  # a built-in name or an uploaded dataset's id
    validation_split: float = Field(default=0.0, ge=0.0, lt=1.0)
    test_split: float | None = Field(default=None, gt=0.0, lt=1.0)  # uploads: default 0.2; built-ins keep theirs
    normalization: Literal["none", "standard", "minmax"] = "none"  # statistics from the training split only
    augmentation: AugmentationSpec | None = None
    noise: NoiseSpec | None = None  # autoencoders: corrupt the training inputs, reconstruct the clean ones
    text: TextSpec | None = None  # text datasets: default TextSpec()
    targets: Literal["labels", "inputs"] = "labels"  # "inputs": the model learns to reproduce its input
    samples: int | None = Field(default=None, ge=20, le=1_000_000)  # generated datasets only
    sequence_length: int | None = Field(default=None, ge=2, le=10_000)  # sine and tokens only
    seed: int = Field(default=0, ge=0, le=2**31 - 1)  # generated datasets: the same seed, the same data


class OptimizerSpec(Strict):
    """An optimizer by Keras name and arguments; `"adam"` alone works as in `model.compile(optimizer="adam")`."""

    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"] = "adam"
    learning_rate: float = Field(default=0.001, gt=0.0, le=10.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)  # sgd, rmsprop
    nesterov: bool = False  # sgd
    beta_1: float = Field(default=0.9, ge=0.0, lt=1.0)  # adam, adamw
    beta_2: float = Field(default=0.999, ge=0.0, lt=1.0)
    rho: float = Field(default=0.9, ge=0.0, lt=1.0)  # rmsprop
    epsilon: float = Field(default=1e-7, gt=0.0)
    weight_decay: float | None = Field(default=None, ge=0.0, le=1.0)  # None: 0.004 for adamw, else 0
    clipnorm: float | None = Field(default=None, gt=0.0)  # clip each update's gradient norm
    clipvalue: float | None = Field(default=None, gt=0.0)  # clip each gradient element


class ScheduleSpec(Strict):
    """How the learning rate changes: per epoch, or per batch for one_cycle."""

    name: Literal["constant", "step", "cosine", "one_cycle", "reduce_on_plateau"] = "constant"
    step_size: int = Field(default=10, ge=1)  # step: epochs between drops
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)  # step: factor per drop
    min_learning_rate: float = Field(default=0.0, ge=0.0)  # cosine floor; reduce_on_plateau's min_lr
    pct_start: float = Field(default=0.3, gt=0.0, lt=1.0)  # one_cycle: share of steps spent warming up
    monitor: str = "val_loss"  # reduce_on_plateau
    factor: float = Field(default=0.1, gt=0.0, lt=1.0)
    patience: int = Field(default=10, ge=0)
    min_delta: float = Field(default=1e-4, ge=0.0)


class EarlyStoppingSpec(Strict):
    """`EarlyStopping(monitor="val_loss", patience=0, min_delta=0, restore_best_weights=False)`."""

    monitor: str = "val_loss"
    patience: int = Field(default=0, ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = False


class AnomalySpec(Strict):
    """`training.anomaly`: after training, an autoencoder's per-row reconstruction error on the validation split
    sets the threshold past which a row is an anomaly: the error's `percentile`."""

    percentile: float = Field(default=99.0, gt=0.0, lt=100.0)


class FineTuneSpec(Strict):
    """`training.fine_tune`: Keras' recipe. After `after_epoch` epochs on a frozen base, unfreeze all of its layers or the
    last `unfreeze` that have weights, and train them at their own (small) learning rate; the head keeps its own."""

    after_epoch: int = Field(ge=1, le=10_000)
    unfreeze: Literal["all"] | Annotated[int, Field(ge=1, le=256)] = "all"
    learning_rate: float = Field(default=1e-5, gt=0.0, le=10.0)


class TrainingSpec(Strict):
    """`compile` and `fit` arguments."""

    optimizer: OptimizerSpec = OptimizerSpec()
    loss: LossName
    metrics: list[MetricName] | None = None  # None: accuracy for classification, mae otherwise
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    lr_schedule: ScheduleSpec = ScheduleSpec()
    early_stopping: EarlyStoppingSpec | None = None
    seed: int = Field(default=0, ge=0, le=2**31 - 1)  # the same seed gives the same split and weights
    max_duration_s: float | None = Field(default=None, gt=0)  # the job fails, registering nothing, past this much training
    anomaly: AnomalySpec | None = None  # autoencoders: learn an anomaly threshold from the validation split
    fine_tune: FineTuneSpec | None = None  # transfer learning: unfreeze the base after some epochs
    discriminator_optimizer: OptimizerSpec | None = None  # GANs: None trains the discriminator with `optimizer`
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5)  # GANs: the discriminator's real target is 1 - this
    label_noise: float = Field(default=0.0, ge=0.0, lt=0.5)  # GANs: its targets move up to this far toward 0.5, at random

    @field_validator("optimizer", "lr_schedule", "discriminator_optimizer", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def is_regression(self) -> bool:
        return self.loss in REGRESSION_LOSSES

    @property
    def metric_names(self) -> list[str]:
        return list(self.metrics) if self.metrics is not None else ["mae" if self.is_regression else "accuracy"]


class DistributedSpec(Strict):
    """`distributed`: train with several processes on one host, one shard of each epoch's rows apiece (PyTorch DDP:
    NCCL between GPUs, gloo on CPUs). Each process takes batches of `training.batch_size`, so one step sees
    `processes` x `batch_size` rows. At most KILN_MAX_TRAINING_PROCESSES."""

    processes: int = Field(default=1, ge=1, le=1024)


class GanSpec(Strict):
    """`model` of a `"kind": "gan"` job, after Keras' DCGAN example: a generator that draws samples from latent vectors z,
    and a discriminator that maps a sample to one logit (real or generated). Both are ordinary Kiln models.

    Conditional (Keras' conditional GAN example): the one-hot class is appended to z, so the generator's input is
    [latent_dim + classes], and to every pixel of the discriminator's input as extra channels ([H, W, C + classes]).
    """

    latent_dim: int = Field(ge=1, le=4096)
    conditional: bool = False
    generator: ModelSpec
    discriminator: ModelSpec


def _model_form(value: Any) -> str:
    """Which `model` a body gives: a GAN's pair of networks, or one network."""
    if isinstance(value, GanSpec) or (isinstance(value, dict) and ({"generator", "discriminator", "latent_dim"} & value.keys())):
        return "gan"
    return "network"


# Tagged so a GAN's errors name its fields and a network's its own, not both forms' (api/errors.py drops the tag from `loc`).
ModelField = Annotated[Annotated[ModelSpec, Tag("network")] | Annotated[GanSpec, Tag("gan")], Discriminator(_model_form)]
MODEL_TAGS = ("network", "gan")


def monitor_mode(monitor: str) -> Literal["min", "max"]:
    """Keras' "auto": accuracy-like figures should rise, losses and errors fall."""
    return "max" if any(word in monitor for word in ("accuracy", "precision", "recall", "f1")) else "min"


def format_loc(loc: tuple[Any, ...]) -> str:
    """`("body", "model", "layers", 1, "Dense", "units")` -> `model.layers[1].units`."""
    parts: list[str] = []
    previous: Any = None
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif isinstance(previous, int) and part[:1].isupper():
            pass  # the layer type pydantic adds after a list index of a tagged union
        elif previous == "model" and part in MODEL_TAGS:
            pass  # which form of `model` it is (one network, or a GAN's two)
        else:
            parts.append(("." if parts else "") + str(part))
        previous = part
    return "".join(parts) or "body"


class JobSpec(Strict):
    """The body of `POST /v1/jobs`. Later versions add fields; these names never change."""

    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    model: ModelField  # a GanSpec for "kind": "gan", else one network
    data: DataSpec
    training: TrainingSpec
    device: DeviceName = "auto"
    kind: Literal["supervised", "autoencoder", "gan"] = "supervised"  # "autoencoder" learns to reproduce its inputs
    distributed: DistributedSpec | None = None  # None: one process, as {"processes": 1}

    @model_validator(mode="before")
    @classmethod
    def _gan_loss(cls, data: Any) -> Any:
        """A GAN's loss is optional: the non-saturating binary cross-entropy (the only one it trains with)."""
        if isinstance(data, dict) and data.get("kind") == "gan" and isinstance(data.get("training"), dict):
            data = data | {"training": {"loss": "binary_crossentropy"} | data["training"]}
        return data

    @property
    def network(self) -> ModelSpec:
        """The one network of a supervised or autoencoder job (a GAN's: its generator, which is what serving runs)."""
        return self.model.generator if isinstance(self.model, GanSpec) else self.model

    @property
    def processes(self) -> int:
        """How many training processes the job runs on its worker's host (1: in the worker's own)."""
        return self.distributed.processes if self.distributed is not None else 1

    @property
    def gan(self) -> GanSpec:
        assert isinstance(self.model, GanSpec), "only a GAN job has a GanSpec"
        return self.model

    @property
    def task(self) -> str:
        """What serving does with the version: `classifier`, `regressor`, `autoencoder` (which can `detect`) or `generator`
        (a GAN's generator, which can `generate`)."""
        if self.kind in ("autoencoder", "gan"):
            return "autoencoder" if self.kind == "autoencoder" else "generator"
        return "regressor" if self.training.is_regression else "classifier"

    @model_validator(mode="after")
    def _kind_and_targets_agree(self) -> JobSpec:
        """`data.targets: "inputs"` means an autoencoder, and an autoencoder's targets are its inputs; a GAN has a GanSpec."""
        if (self.kind == "gan") != isinstance(self.model, GanSpec):
            if self.kind == "gan":
                raise ValueError('"kind": "gan" needs model {"latent_dim", "generator", "discriminator"}')
            raise ValueError('a model with a generator and a discriminator is a GAN: set "kind": "gan"')
        if self.kind == "gan" and self.data.targets == "inputs":
            raise ValueError('a GAN learns from samples alone: drop data.targets "inputs"')
        if self.kind == "autoencoder" and self.data.targets != "inputs":
            if "targets" in self.data.model_fields_set:
                raise ValueError('kind "autoencoder" reproduces its inputs: drop data.targets "labels"')
            object.__setattr__(self, "data", self.data.model_copy(update={"targets": "inputs"}))
        elif self.data.targets == "inputs" and self.kind != "autoencoder":
            if "kind" in self.model_fields_set:
                raise ValueError('data.targets "inputs" makes an autoencoder: set "kind": "autoencoder", not "supervised"')
            object.__setattr__(self, "kind", "autoencoder")
        return self
