"""A linear generator x = A z + b: noise-free probabilistic PCA, or noise-free ICA."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gandiv.data.spread import laplace_sample
from gandiv.models.base import LatentGenerator

PRIORS = ("gaussian", "laplace")
# Unit-variance Laplace sources: scale 1/√2 (the same convention as the `ica` data).
LAPLACE_SCALE = 1 / math.sqrt(2.0)


class LinearGenerator(LatentGenerator):
    """x = A z + b with A of shape (dim, latent_dim) and z from a unit-variance prior.

    ``gaussian``: z ~ N(0, I), so the samples are N(b, AAᵀ) on a latent_dim-dimensional plane
    (Tipping & Bishop's probabilistic PCA with zero noise). ``laplace``: independent
    unit-variance Laplace sources, the noise-free ICA model (Zhang et al. 2018, §5). Treated as
    a generator without a density, whatever latent_dim is.
    """

    has_density = False

    def __init__(self, dim: int, latent_dim: int = 1, prior: str = "gaussian") -> None:
        super().__init__()
        if dim < 1 or latent_dim < 1:
            raise ValueError(f"dim and latent_dim must be ≥ 1, got {dim} and {latent_dim}")
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        self.dim, self.latent_dim, self.prior = dim, latent_dim, prior
        # The global RNG (seeded by the trainer) draws the initial A.
        self.weight = nn.Parameter(0.5 * torch.randn(dim, latent_dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def generate(self, z: Tensor) -> Tensor:
        # (mT and a broadcast bias: the same code maps a stack of generators, one per leading index)
        return z @ self.weight.mT + self.bias.unsqueeze(-2)

    def latent_sample(self, n: int, generator: torch.Generator) -> Tensor:
        if self.prior == "gaussian":
            return super().latent_sample(n, generator)
        s = laplace_sample((n, self.latent_dim), LAPLACE_SCALE, generator)
        return s.to(self.weight)

    def latent_log_prob(self, z: Tensor) -> Tensor:
        if self.prior == "gaussian":
            return super().latent_log_prob(z)
        return (-z.abs() / LAPLACE_SCALE).sum(-1) - z.shape[-1] * math.log(2 * LAPLACE_SCALE)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, latent_dim={self.latent_dim}, prior={self.prior}"
