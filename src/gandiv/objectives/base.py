"""What every training objective provides to the training loop."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from gandiv.models.base import GenerativeModel


class Objective(nn.Module):
    """A loss for the model, computed from a data batch and a noise generator.

    The loop owns reduction-free bookkeeping, backward passes and optimiser steps; an objective
    only returns the scalar the model minimises. Objectives are modules so that any state they
    keep (e.g. a quadrature box) travels in checkpoints.
    """

    name: ClassVar[str]
    needs_model_density: ClassVar[bool] = False  # uses log q(x)
    needs_data_density: ClassVar[bool] = False  # uses log p(x): the data's density must be known
    uses_critic: ClassVar[bool] = False  # trains a critic (the `critic` group, trainer.lr_d)

    def model_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> Tensor:
        raise NotImplementedError
