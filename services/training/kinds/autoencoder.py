"""`"kind": "autoencoder"`: one network learns to reproduce its input (`data.targets: "inputs"`), through a bottleneck.

Supervised training with the inputs as targets, plus what makes an autoencoder useful: denoising
(`data.noise` corrupts the training inputs only, the targets stay clean) and an anomaly threshold
(`training.anomaly`: a percentile of the validation rows' reconstruction error, kept with the version).
"""

from __future__ import annotations

from typing import Any

from services.training.anomaly import anomaly_record
from services.training.augment import Corrupter
from services.training.kinds.supervised import Supervised, Transform


class Autoencoder(Supervised):
    def _transforms(self) -> tuple[Transform, ...]:
        noise = self.spec.data.noise  # noise or augmentation, never both (refused at submission)
        return (Corrupter(noise, seed=self.spec.training.seed),) if noise is not None else super()._transforms()

    def anomaly(self) -> dict[str, Any] | None:
        wanted = self.spec.training.anomaly
        return anomaly_record(self.network, self.val, wanted) if wanted is not None and self.val is not None else None
