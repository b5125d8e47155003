"""Random changes to training batches, each drawn from a generator of its own (so checkpoints can resume it):
image augmentation, one affine warp per batch (Keras' RandomFlip, RandomTranslation, RandomRotation and
RandomZoom in one step), and a denoising autoencoder's corruption of its inputs."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from services.spec.job import AugmentationSpec, NoiseSpec


class Corrupter:
    """A denoising autoencoder's corruption of training batches: Gaussian noise, or masking each value to 0."""

    def __init__(self, spec: NoiseSpec, *, seed: int) -> None:
        self.spec = spec
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.gaussian is not None:
            noise = torch.randn(x.shape, generator=self.generator).to(x.device, x.dtype)
            return x + self.spec.gaussian * noise
        keep = torch.rand(x.shape, generator=self.generator).to(x.device) >= (self.spec.masking or 0.0)
        return x * keep.to(x.dtype)


class Augmenter:
    """Applies `spec` to channels-last image batches (B, H, W, C); drawn from its own generator."""

    def __init__(self, spec: AugmentationSpec, *, seed: int) -> None:
        self.spec = spec
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, n: int, bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=self.generator) * 2 - 1) * bound

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        spec, n = self.spec, x.shape[0]
        angle = self._uniform(n, math.radians(spec.rotation))
        scale = 1 + self._uniform(n, spec.zoom)
        flip_x = self._flips(n, spec.flip in ("horizontal", "both"))
        flip_y = self._flips(n, spec.flip in ("vertical", "both"))
        shift = torch.stack([self._uniform(n, 2 * spec.shift), self._uniform(n, 2 * spec.shift)], dim=1)  # in [-1, 1] units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([
            torch.stack([cos * flip_x, -sin * flip_y, shift[:, 0]], dim=1),
            torch.stack([sin * flip_x, cos * flip_y, shift[:, 1]], dim=1),
        ], dim=1).to(x.device, x.dtype)  # (B, 2, 3): output pixel -> input pixel  # fmt: skip
        images = x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return warped.permute(0, 2, 3, 1)

    def _flips(self, n: int, enabled: bool) -> torch.Tensor:
        if not enabled:
            return torch.ones(n)
        return torch.where(torch.rand(n, generator=self.generator) < 0.5, -1.0, 1.0)
