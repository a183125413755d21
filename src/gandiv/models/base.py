"""The interface of every generator: a reparameterised sampler and, where one exists, a density."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

# Points per pass of `GenerativeModel.log_prob_grid`.
GRID_CHUNK = 4096


def standard_normal(n: int, dim: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """Draw (n, dim) N(0, I) noise from ``generator`` with the dtype and device of ``like``."""
    eps = torch.randn((n, dim), generator=generator, device=generator.device, dtype=like.dtype)
    return eps.to(like.device)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * z.pow(2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class GenerativeModel(nn.Module, ABC):
    """A model Q of data in R^dim: samples x ~ Q reparameterised as x = G_θ(noise), maybe log q(x).

    ``sample`` must be differentiable with respect to the parameters (the reverse-KL and adversarial
    objectives back-propagate through it); ``log_prob`` exists only when ``has_density`` is True.
    """

    dim: int
    has_density: bool = False
    # sample(n) = transform(noise(n)): the noise drawn apart from the map (vectorised groups draw
    # each run's noise alone and map a stack of models at once; gandiv.training.vectorized)
    separates_noise: bool = False

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Return (n, dim) reparameterised samples, drawing all noise from ``generator``."""

    def noise(self, n: int, generator: torch.Generator) -> Tensor:
        """The noise behind n samples (models that `separates_noise`)."""
        raise NotImplementedError(f"{type(self).__name__} does not draw its noise apart")

    def transform(self, noise: Tensor) -> Tensor:
        """Samples from `noise` (models that `separates_noise`); written so that a leading model
        axis on the parameters and the noise maps through (gandiv.training.stacked)."""
        raise NotImplementedError(f"{type(self).__name__} does not draw its noise apart")

    def log_prob(self, x: Tensor) -> Tensor:
        """Return log q(x), shape (n,), for x of shape (n, dim)."""
        raise NotImplementedError(f"{type(self).__name__} has no density: log_prob is unavailable")

    def log_prob_grid(self, axes: tuple[Tensor, ...], points: Tensor) -> Tensor:
        """`log_prob` at `points`, the product of the ascending `axes` (meshgrid "ij", row-major),
        without gradients: in chunks of GRID_CHUNK points, whose activations stay in the CPU's
        caches (a flow on a 512² grid: 2–3× faster than one pass, the same values); densities
        with structure on a grid (sums of many atoms) override it."""
        with torch.no_grad():
            return torch.cat([self.log_prob(chunk) for chunk in points.split(GRID_CHUNK)])

    def sample_with_log_prob(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Return samples and their log q in one pass, both differentiable."""
        x = self.sample(n, generator)
        return x, self.log_prob(x)


class LatentGenerator(GenerativeModel):
    """A deterministic generator x = G(z), z ~ p(z): samples lie on the image of G.

    What the spread objective trains: its encoder inverts G, its bound needs G(z) and log p(z).
    The prior is N(0, I) unless a subclass says otherwise.
    """

    latent_dim: int
    separates_noise = True

    @abstractmethod
    def generate(self, z: Tensor) -> Tensor:
        """Map latents z of shape (n, latent_dim) to samples of shape (n, dim)."""

    def forward(self, z: Tensor) -> Tensor:
        return self.generate(z)

    def latent_sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw (n, latent_dim) latents from the prior."""
        return standard_normal(n, self.latent_dim, generator, like=next(self.parameters()))

    def latent_log_prob(self, z: Tensor) -> Tensor:
        """log p(z), summed over the last dimension."""
        return standard_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.generate(self.latent_sample(n, generator))

    def noise(self, n: int, generator: torch.Generator) -> Tensor:
        return self.latent_sample(n, generator)

    def transform(self, noise: Tensor) -> Tensor:
        return self.generate(noise)
