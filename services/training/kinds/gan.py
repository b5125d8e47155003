"""`"kind": "gan"`: a generator and a discriminator trained against each other, after Keras' DCGAN example.

Per batch the discriminator takes one step on real rows (target 1, less `label_smoothing`) and generated
ones (target 0), `label_noise` moving targets toward 0.5 at random; then the generator takes one step on the
non-saturating loss (the discriminator should say 1 to its samples). A conditional GAN (Keras' conditional
GAN example) appends the one-hot class to z and, as extra channels, to the discriminator's input.

Each epoch reports d_loss, g_loss and the discriminator's mean verdicts D(x) (d_x) and D(G(z)) (d_g_z),
renders the same fixed latent batch as a PNG, and warns when training goes unstable. Only the generator is
exported: z (and the class) in, samples in the dataset's layout out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from services.data.builtins import LoadedDataset
from services.data.png import grid_png, image_layout
from services.errors import TrainingFailed
from services.spec import JobSpec, final_activation, resolve
from services.training.builder import Network, build_network, parameter_count
from services.training.export import export_onnx, onnx_parity
from services.training.kinds.base import Exported, ParityCheck, autocast_dtype
from services.training.loop import EpochEnd, Split, autocast
from services.training.optim import make_clipper, make_optimizer
from services.training.preprocess import annotate_onnx
from services.training.rows import on_device

FIXED_SAMPLES = 16  # the latent batch rendered every epoch
WINNING_D_LOSS, WINNING_EPOCHS = 0.05, 5  # a discriminator this sure for this long leaves the generator no gradient
COLLAPSED_SPREAD = 0.1  # samples this much closer together than real ones are near-identical


def one_hot(labels: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(B,) or (B, 1) class indices as (B, classes); exported as Equal and Cast, which every runtime has."""
    return (labels.reshape(-1, 1) == torch.arange(classes, device=labels.device)).to(dtype)


def with_class(samples: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    """The discriminator's input: the samples, with the one-hot class appended as channels of every pixel (or values)."""
    if condition is None:
        return samples
    shape = (*samples.shape[:-1], condition.shape[-1])
    return torch.cat([samples, condition.reshape(len(samples), *([1] * (samples.dim() - 2)), -1).expand(shape)], dim=-1)


class GeneratorExport(nn.Module):
    """What serving runs: z (and the class index, for a conditional GAN) in, samples out."""

    def __init__(self, generator: Network, classes: int) -> None:
        super().__init__()
        self.generator, self.classes = generator, classes

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if label is not None:
            z = torch.cat([z, one_hot(label, self.classes, z.dtype)], dim=1)
        output = self.generator(z)
        return output if isinstance(output, torch.Tensor) else output[0]


def spread(samples: torch.Tensor) -> float:
    """The mean distance between two samples of a batch."""
    flat = samples.float().reshape(len(samples), -1)
    return float(torch.pdist(flat).mean()) if len(flat) > 1 else 0.0


class GanTrainer:
    figures: tuple[str, ...] = ("d_loss", "g_loss", "d_x", "d_g_z")

    def __init__(self, gan: Gan) -> None:
        self.gan = gan
        self.d_wins = 0  # epochs in a row the discriminator has won outright
        self.collapsed = False  # the last epoch's fixed batch was near-identical (warned once per spell)

    def begin_epoch(self, epoch: int) -> None:
        self.gan.generator.train()
        self.gan.discriminator.train()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gan = self.gan
        n = len(x)
        condition = one_hot(y, gan.classes, x.dtype) if gan.classes else None
        z = gan.latent(n, x.device)
        real_target, fake_target = gan.targets(n, x.device)
        with autocast(x, gan.autocast):
            fake = gan.g_model(z if condition is None else torch.cat([z, condition], dim=1))
            real_logits = gan.d_model(with_class(x, condition)).float()
            fake_logits = gan.d_model(with_class(fake.detach(), condition)).float()
        logits = torch.cat([real_logits, fake_logits]).reshape(-1)
        d_loss = F.binary_cross_entropy_with_logits(logits, torch.cat([real_target, fake_target]))
        gan.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        if gan.d_clip is not None:
            gan.d_clip()
        gan.d_optimizer.step()
        with autocast(x, gan.autocast):  # the generator's step: the discriminator should take its samples for real
            verdict = gan.d_model(with_class(fake, condition)).float().reshape(-1)
        g_loss = F.binary_cross_entropy_with_logits(verdict, torch.ones_like(verdict))
        gan.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        if gan.g_clip is not None:
            gan.g_clip()
        gan.g_optimizer.step()
        d_x, d_g_z = torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()
        return torch.stack([d_loss.detach(), g_loss.detach(), d_x.detach(), d_g_z.detach()])

    def end_epoch(self, epoch: int, means: dict[str, float], val: Split | None) -> EpochEnd:
        metrics = {"loss": means["g_loss"]} | means  # `loss` is the generator's: the network the version keeps
        warnings = []
        self.d_wins = self.d_wins + 1 if means["d_loss"] < WINNING_D_LOSS else 0
        if self.d_wins == WINNING_EPOCHS:
            warnings.append(f"the discriminator wins outright: d_loss below {WINNING_D_LOSS} for {WINNING_EPOCHS} epochs "
                            f"({means['d_loss']:.3g} now), so the generator learns little; try label_smoothing, label_noise "
                            "or a lower discriminator_optimizer learning rate")  # fmt: skip
        samples = self.gan.fixed_samples()
        ratio = spread(samples) / self.gan.real_spread if self.gan.real_spread else 1.0
        metrics["sample_spread"] = ratio
        if ratio < COLLAPSED_SPREAD and not self.collapsed:
            warnings.append(f"the generator's samples collapse: the fixed latent batch's samples are {ratio:.1%} as far apart "
                            "as real samples are (mode collapse)")  # fmt: skip
        self.collapsed = ratio < COLLAPSED_SPREAD
        return EpochEnd(metrics, warnings=tuple(warnings), image=self.gan.render(samples))

    def finish(self) -> None:
        pass


class Gan:
    """The two networks, their optimizers, the real rows, and the generators z and label noise are drawn from."""

    def __init__(self, spec: JobSpec, data: LoadedDataset, device: torch.device) -> None:
        self.spec, self.task = spec, "generator"
        gan, training = spec.gan, spec.training
        self.latent_dim = gan.latent_dim
        self.classes = data.info.n_classes if gan.conditional else 0
        self.class_names = list(data.info.class_names) if gan.conditional else None
        self.generator = build_network(gan.generator, fuse_output_activation=False).to(device)
        self.discriminator = build_network(gan.discriminator, fuse_output_activation=True).to(device)  # logits out
        self.g_model, self.d_model = self.generator.trainable(), self.discriminator.trainable()
        if not self.discriminator.outputs_logits and final_activation(gan.discriminator) != "linear":  # checked at submission
            raise TrainingFailed("the discriminator must end in a logit, or in a sigmoid as its last activation")
        if not isinstance(data.x_train, np.ndarray):
            raise TrainingFailed("a GAN needs a dataset that fits in memory")
        self.sample_shape = sample_shape = tuple(resolve(gan.generator).output.shape)
        rows = data.x_train.astype(np.float32)
        self.value_range = (float(rows.min()), float(rows.max())) if len(rows) else (0.0, 1.0)
        labels = torch.from_numpy(np.asarray(data.y_train)).to(device)
        real_rows = on_device(rows, sample_shape, np.dtype("float32"), device)
        self.train, self.val = Split(real_rows, labels), None
        self.g_optimizer = make_optimizer(training.optimizer, [p for p in self.generator.parameters() if p.requires_grad])
        d_spec = training.discriminator_optimizer or training.optimizer
        self.d_optimizer = make_optimizer(d_spec, [p for p in self.discriminator.parameters() if p.requires_grad])
        self.g_clip = make_clipper(training.optimizer, list(self.generator.parameters()))
        self.d_clip = make_clipper(d_spec, list(self.discriminator.parameters()))
        self.autocast = autocast_dtype(device)
        self.noise = torch.Generator().manual_seed(training.seed)  # z and label noise: its own, so a checkpoint resumes it
        fixed = torch.Generator().manual_seed(training.seed + 1)
        self.fixed_z = torch.randn((FIXED_SAMPLES, self.latent_dim), generator=fixed).to(device)
        self.fixed_labels = torch.arange(FIXED_SAMPLES, device=device) % self.classes if self.classes else None
        real = real_rows[torch.randperm(len(rows), generator=fixed)[:FIXED_SAMPLES].to(device)]
        self.real_spread = spread(real)
        self.trainer = GanTrainer(self)

    def latent(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn((n, self.latent_dim), generator=self.noise).to(device)

    def targets(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's targets for n real and n generated rows: 1 - label_smoothing and 0, moved by label_noise."""
        training = self.spec.training
        real, fake = torch.full((n,), 1.0 - training.label_smoothing), torch.zeros(n)
        if training.label_noise > 0:
            real = real - training.label_noise * torch.rand(n, generator=self.noise)
            fake = fake + training.label_noise * torch.rand(n, generator=self.noise)
        return real.to(device), fake.to(device)

    @torch.no_grad()
    def fixed_samples(self) -> torch.Tensor:
        self.generator.eval()
        z = self.fixed_z
        if self.fixed_labels is not None:
            z = torch.cat([z, one_hot(self.fixed_labels, self.classes, z.dtype)], dim=1)
        samples = self.g_model(z).float()
        self.generator.train()
        return samples

    def render(self, samples: torch.Tensor) -> bytes | None:
        if image_layout(tuple(samples.shape[1:])) is None:
            return None
        return grid_png(samples.cpu().numpy(), low=self.value_range[0], high=self.value_range[1])

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": {k: v.detach().cpu() for k, v in self.generator.state_dict().items()},
            "discriminator": {k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()},
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "noise": self.noise.get_state(),
            "stability": {"d_wins": self.trainer.d_wins, "collapsed": self.trainer.collapsed},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.noise.set_state(state["noise"])
        self.trainer.d_wins, self.trainer.collapsed = state["stability"]["d_wins"], state["stability"]["collapsed"]

    def test(self) -> dict[str, float]:
        return {"parameters": float(parameter_count(self.generator)),
                "discriminator_parameters": float(parameter_count(self.discriminator))}  # fmt: skip

    def load_base(self, state: dict[str, torch.Tensor], input_names: list[str]) -> None:
        raise TrainingFailed("a GAN's networks take no base")  # refused at submission

    def weights(self) -> dict[str, torch.Tensor]:
        return dict(self.generator.state_dict())

    def generation(self) -> dict[str, Any]:
        """What serving needs to draw samples: z's size, the classes, the samples' shape and range."""
        return {"latent_dim": self.latent_dim, "classes": self.classes, "labels": self.class_names,
                "sample_shape": list(self.sample_shape), "value_range": list(self.value_range)}  # fmt: skip

    def export(self, path: Path, parity: ParityCheck) -> Exported:
        module = GeneratorExport(self.generator, self.classes)
        names = ["z", "label"] if self.classes else ["z"]
        examples = [torch.zeros(2, self.latent_dim)] + ([torch.zeros(2, 1, dtype=torch.int64)] if self.classes else [])
        export_onnx(module, examples=examples, path=path, input_names=names, output_names=["samples"])
        annotate_onnx(path, {"task": self.task, "generation": self.generation()})
        rows = max(2, min(parity.rows, 64))
        feeds: dict[str, np.ndarray] = {
            "z": np.random.default_rng(self.spec.training.seed).standard_normal((rows, self.latent_dim)).astype(np.float32)
        }
        if self.classes:
            feeds["label"] = (np.arange(rows) % self.classes).astype(np.int64).reshape(rows, 1)
        agreement = onnx_parity(module, path=path, feeds=feeds, atol=parity.atol, rtol=parity.rtol)
        if not agreement.agrees:
            raise TrainingFailed(f"ONNX parity check failed on the generator's samples: max abs diff {agreement.max_abs_diff:.3g} > "
                                 f"{parity.atol:g} (+ rtol {parity.rtol:g})")  # fmt: skip
        return Exported(agreement.max_abs_diff, generation=self.generation())
