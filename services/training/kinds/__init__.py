"""Job kinds: each `"kind"` of job is one module here, behind the JobKind protocol (kinds/base.py)."""

from __future__ import annotations

import torch

from services.data.builtins import LoadedDataset
from services.errors import TrainingFailed
from services.spec import JobSpec
from services.training.distributed import Distributed
from services.training.kinds.base import BaseWeights, Exported, JobKind, ParityCheck

__all__ = ["BaseWeights", "Exported", "JobKind", "ParityCheck", "build_kind"]


def build_kind(spec: JobSpec, data: LoadedDataset, device: torch.device, vocabulary: list[str] | None = None,
               distributed: Distributed | None = None) -> JobKind:  # fmt: skip
    """The networks, optimizers and splits of `spec`'s kind, on `device`, freshly initialised from its seed (text
    tokenised with `vocabulary` when given: a text base's); one rank of several with `distributed`."""
    if spec.kind == "gan":
        from services.training.kinds.gan import Gan

        if distributed is not None:  # refused at submission too (services.spec.budget.check_processes)
            raise TrainingFailed("a GAN trains in one process")
        return Gan(spec, data, device)
    if spec.kind == "autoencoder":
        from services.training.kinds.autoencoder import Autoencoder

        return Autoencoder(spec, data, device, vocabulary, distributed)
    from services.training.kinds.supervised import Supervised

    return Supervised(spec, data, device, vocabulary, distributed)
