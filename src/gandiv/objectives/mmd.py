"""Moment matching without a critic: the model minimises the kernel MMD² to the data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gandiv.evaluation.distances import mmd2_unbiased
from gandiv.models.base import GenerativeModel
from gandiv.objectives.base import Objective


class MMD(Objective):
    """Minimise the unbiased MMD² between a data batch and a model batch (Li et al. 2015;
    Dziugaite et al. 2015), with a sum of Gaussian kernels over `bandwidths`."""

    name = "mmd"

    def __init__(self, bandwidths: Sequence[float]) -> None:
        super().__init__()
        self.bandwidths = tuple(bandwidths)

    def model_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> Tensor:
        return self.sample_loss(model, model.sample(len(batch), generator), batch)

    def sample_loss(self, model: GenerativeModel, samples: Tensor, batch: Tensor) -> Tensor:
        return mmd2_unbiased(batch, samples, self.bandwidths)
