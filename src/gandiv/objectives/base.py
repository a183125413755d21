"""What every training objective provides to the training loop."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from gandiv.data.spread import SpreadKernel, SpreadNoise
from gandiv.divergences import FDivergence
from gandiv.models.base import GenerativeModel


class Objective(nn.Module):
    """A loss for the model, computed from a data batch and a noise generator.

    The loop owns backward passes, optimiser steps and bookkeeping; an objective only returns the
    scalars to minimise: the model's, and for adversarial objectives the critic's. Objectives are
    modules so that their state (a critic, a quadrature box) travels in checkpoints.
    """

    name: ClassVar[str]
    needs_model_density: ClassVar[bool] = False  # uses log q(x)
    needs_data_density: ClassVar[bool] = False  # uses log p(x): the data's density must be known
    uses_critic: ClassVar[bool] = False  # trains a critic (the `critic` group, trainer.lr_d)
    needs_generator: ClassVar[bool] = False  # needs x = G(z) itself (a `LatentGenerator`)
    # The divergence D(P‖Q) the objective minimises, if it is a row of the table: its true value
    # is reported as the ground-truth metric ``objective_divergence``.
    divergence: FDivergence | None = None
    # Noise added to data and model alike (spread divergence, instance noise); then the objective
    # minimises its divergence between the spread distributions P̃ and Q̃.
    spread: SpreadNoise | None = None
    step = 0  # training steps done (set by `begin_step`)

    def begin_step(self, step: int) -> None:
        """Called by the loop before each training step with the number of steps done."""
        self.step = step

    @property
    def spread_kernel(self) -> SpreadKernel | None:
        """The spread noise's kernel at the current step (σ annealed on its schedule), or None."""
        return None if self.spread is None else self.spread.kernel_at(self.step)

    def joint_parameters(self) -> list[nn.Parameter]:
        """Parameters stepped with the model's, by its optimiser (e.g. an encoder)."""
        return []

    def model_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> Tensor:
        raise NotImplementedError

    def sample_loss(self, model: GenerativeModel, samples: Tensor, batch: Tensor) -> Tensor:
        """The model's loss as a function of given model samples (model parameters held fixed).

        Its gradient with respect to `samples` is how the loss pushes each sample (the gradient
        field figure). Objectives whose loss is not a function of model samples (maximum
        likelihood, `direct` by quadrature) raise NotImplementedError.
        """
        raise NotImplementedError(f"{type(self).__name__} does not push model samples")

    # Objectives with a critic (uses_critic) override these.
    def critic_parameters(self) -> list[nn.Parameter]:
        """The critic's parameters, stepped by their own optimiser before each model step."""
        return []

    def critic_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss the critic minimises, and detached metrics to log with it."""
        raise NotImplementedError(f"{type(self).__name__} has no critic")

    def after_critic_step(self) -> None:
        """Called after each critic optimiser step (e.g. to update an average of its weights)."""

    def critic_output(self, x: Tensor) -> Tensor:
        """The critic's raw output V(x), as the model sees it (for figures)."""
        raise NotImplementedError(f"{type(self).__name__} has no critic")
