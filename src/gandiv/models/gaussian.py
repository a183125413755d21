"""A full-covariance Gaussian model with a Cholesky parameterisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gandiv.models.base import GenerativeModel, standard_normal, standard_normal_log_prob

# A floor on the Cholesky diagonal keeps the covariance positive definite for any raw parameter.
MIN_SCALE = 1e-5


class GaussianModel(GenerativeModel):
    """Q = N(loc, L Lᵀ) with L lower triangular, diag(L) = softplus(raw diagonal) + MIN_SCALE.

    Sampling is reparameterised, x = loc + L ε with ε ~ N(0, I), and log q is exact.
    """

    has_density = True
    separates_noise = True

    def __init__(self, dim: int, init_std: float = 1.0, init_mean_std: float = 0.1) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be ≥ 1, got {dim}")
        if init_std <= MIN_SCALE:
            raise ValueError(f"init_std must be > {MIN_SCALE}, got {init_std}")
        if init_mean_std < 0:
            raise ValueError(f"init_mean_std must be ≥ 0, got {init_mean_std}")
        self.dim = dim
        # The global RNG (seeded by the trainer) breaks the symmetry of the initial mean.
        self.loc = nn.Parameter(torch.randn(dim) * init_mean_std)
        # softplus⁻¹(s) = s + log(1 − e^{−s}), so that the initial diagonal is init_std exactly.
        target = init_std - MIN_SCALE
        raw_diag = target + math.log(-math.expm1(-target))
        self.raw_scale_tril = nn.Parameter(torch.eye(dim) * raw_diag)

    @property
    def mean(self) -> Tensor:
        """The mean, shape (dim,)."""
        return self.loc

    @property
    def scale_tril(self) -> Tensor:
        """The Cholesky factor L of the covariance, shape (dim, dim)."""
        raw = self.raw_scale_tril  # (the last two axes: a stack of models maps through)
        diag = F.softplus(torch.diagonal(raw, dim1=-2, dim2=-1)) + MIN_SCALE
        return torch.tril(raw, diagonal=-1) + torch.diag_embed(diag)

    @property
    def covariance(self) -> Tensor:
        """The covariance L Lᵀ, shape (dim, dim)."""
        scale_tril = self.scale_tril
        return scale_tril @ scale_tril.T

    def assign(self, mean: Tensor, cov: Tensor) -> None:
        """Set the parameters so that Q = N(mean, cov) (cov positive definite)."""
        chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
        diag = (torch.diagonal(chol) - MIN_SCALE).clamp(min=1e-12)
        raw_diag = diag + torch.log(-torch.expm1(-diag))  # softplus⁻¹
        raw = torch.tril(chol, diagonal=-1) + torch.diag_embed(raw_diag)
        with torch.no_grad():
            self.loc.copy_(torch.as_tensor(mean).reshape(self.dim))
            self.raw_scale_tril.copy_(raw)

    def _log_prob_of_noise(self, eps: Tensor, scale_tril: Tensor) -> Tensor:
        # log q(loc + L ε) = log N(ε; 0, I) − log det L
        return standard_normal_log_prob(eps) - torch.log(torch.diagonal(scale_tril)).sum()

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.transform(self.noise(n, generator))

    def noise(self, n: int, generator: torch.Generator) -> Tensor:
        return standard_normal(n, self.dim, generator, like=self.loc)

    def transform(self, noise: Tensor) -> Tensor:
        return self.loc.unsqueeze(-2) + noise @ self.scale_tril.mT

    def log_prob(self, x: Tensor) -> Tensor:
        scale_tril = self.scale_tril
        eps = torch.linalg.solve_triangular(scale_tril, (x - self.loc).T, upper=False).T
        return self._log_prob_of_noise(eps, scale_tril)

    def sample_with_log_prob(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        eps = standard_normal(n, self.dim, generator, like=self.loc)
        scale_tril = self.scale_tril
        return self.loc + eps @ scale_tril.T, self._log_prob_of_noise(eps, scale_tril)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
