"""Ground truth between the spread distributions P̃ = P * K and Q̃ = Q * K.

Q̃(y) = ∫ K(y − G(z)) p(z) dz of a deterministic generator is exact here in two cases: a linear
generator with a Gaussian prior and Gaussian noise, N(b, AAᵀ + σ²I) (probabilistic PCA); and any
generator with a one-dimensional latent, by composite Gauss–Legendre quadrature over z with one
8-node panel per σ of the curve G traces (per σ/4 for the Laplace kernel). P̃ comes from
`gandiv.data.spread.spread_data`. With both, KL(P̃‖Q̃), KL(Q̃‖P̃), JS ... are the ground-truth
machinery's (quadrature on a grid in 1-D/2-D, Monte Carlo otherwise), reported as
``spread_kl_pq`` etc.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gandiv.data.manifold import ICA, Curve, amari_distance
from gandiv.data.spread import (
    SpreadKernel,
    atoms_log_prob,
    composite_gauss_legendre,
    curve_panels,
    spread_data,
)
from gandiv.data.toy import ToyData
from gandiv.divergences import FDivergence
from gandiv.evaluation.ground_truth import ground_truth_metrics
from gandiv.models.base import GenerativeModel, LatentGenerator
from gandiv.models.linear import LAPLACE_SCALE, LinearGenerator
from gandiv.objectives.base import Objective

__all__ = [
    "SpreadModel",
    "displayed_data",
    "has_spread_metrics",
    "spread_metrics",
    "spread_model",
]

# Half-width of the latent range integrated over: the prior's mass outside is below 1e-9.
_GAUSSIAN_RANGE = 6.5
_LAPLACE_RANGE = LAPLACE_SCALE * math.log(1e9)


class SpreadModel(GenerativeModel):
    """Q̃ = Q * K for a deterministic generator: samples G(z) + ε, and log q̃ (see the module)."""

    has_density = True

    def __init__(self, model: LatentGenerator, kernel: SpreadKernel) -> None:
        super().__init__()
        if not spread_density_known(model, kernel):
            raise ValueError("the spread density of this model is not available")
        self.model, self.kernel, self.dim = model, kernel, model.dim
        self._gaussian: tuple[Tensor, Tensor] | None = None
        self._atoms: tuple[Tensor, Tensor] | None = None
        with torch.no_grad():
            if isinstance(model, LinearGenerator) and model.prior == "gaussian":
                a, b = model.weight.double(), model.bias.double()
                cov = a @ a.T + kernel.sigma**2 * torch.eye(
                    model.dim, dtype=a.dtype, device=a.device
                )
                self._gaussian = (b, torch.linalg.cholesky(cov))
            else:
                self._atoms = self._latent_rule()

    def _latent_rule(self) -> tuple[Tensor, Tensor]:
        """Atoms G(z_j) with log weights log(w_j p(z_j)) of the rule over the latent line."""
        model = self.model
        laplace = isinstance(model, LinearGenerator) and model.prior == "laplace"
        reach = _LAPLACE_RANGE if laplace else _GAUSSIAN_RANGE
        like = next(model.parameters())
        pilot = torch.linspace(-reach, reach, 4097, dtype=torch.float64)
        path = model.generate(pilot[:, None].to(like)).double()
        panels = curve_panels(path.cpu(), self.kernel.resolution())
        panels += panels % 2  # a panel edge at z = 0, where the Laplace prior has its kink
        z, w = composite_gauss_legendre(-reach, reach, panels)
        z = z[:, None]
        log_w = w.log().to(like.device) + model.latent_log_prob(z.to(like.device))
        return model.generate(z.to(like)).double(), log_w

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.kernel.add_noise(
            self.model.sample(n, generator), generator, dtype=torch.float64
        )

    def log_prob(self, x: Tensor) -> Tensor:
        if self._gaussian is not None:
            mean, chol = self._gaussian
            diff = (x.to(torch.float64) - mean).T
            white = torch.linalg.solve_triangular(chol, diff, upper=False)
            log_det = torch.diagonal(chol).log().sum()
            out = -0.5 * white.square().sum(0) - log_det - 0.5 * self.dim * math.log(2 * math.pi)
        else:
            assert self._atoms is not None
            centres, log_w = self._atoms
            out = atoms_log_prob(x, centres, log_w, self.kernel)
        return out.to(x.dtype)


def spread_density_known(model: GenerativeModel, kernel: SpreadKernel) -> bool:
    """Whether `SpreadModel` gives log q̃ for this generator and kernel."""
    if not isinstance(model, LatentGenerator):
        return False
    linear_gaussian = (
        isinstance(model, LinearGenerator)
        and model.prior == "gaussian"
        and kernel.kind == "gaussian"
    )
    return linear_gaussian or model.latent_dim == 1


def spread_model(model: GenerativeModel, kernel: SpreadKernel) -> SpreadModel | None:
    """Q̃ for `model`, or None where log q̃ is not available."""
    if not isinstance(model, LatentGenerator) or not spread_density_known(model, kernel):
        return None
    return SpreadModel(model, kernel)


def has_spread_metrics(data: ToyData, model: GenerativeModel, objective: Objective) -> bool:
    """Whether `spread_metrics` reports anything for this run."""
    if _recovery(data, model) is not None:
        return True
    if objective.spread is None:
        return False
    kernel = objective.spread.kernel_at(0)
    return spread_data(data, kernel).has_density and spread_density_known(model, kernel)


def _recovery(data: ToyData, model: GenerativeModel) -> float | None:
    """The Amari distance of a linear generator's A to the ICA data's mixing matrix."""
    if not (isinstance(data, ICA) and isinstance(model, LinearGenerator)):
        return None
    if model.latent_dim != data.dim:
        return None
    return amari_distance(model.weight.detach().cpu(), data.mixing)


def spread_metrics(
    data: ToyData,
    model: GenerativeModel,
    objective: Objective,
    generator: torch.Generator,
    points: int | None = None,
    pis: Sequence[float] = (),
    extra: Mapping[str, FDivergence] | None = None,
    cache: dict[Any, Any] | None = None,
) -> dict[str, float]:
    """``spread_kl_pq`` = KL(P̃‖Q̃), ``spread_kl_qp``, ``spread_js`` (and `pis`, `extra` rows)
    at the objective's current σ where both spread densities are known, and ``amari_distance``
    for a linear generator on ICA data."""
    out: dict[str, float] = {}
    recovered = _recovery(data, model)
    if recovered is not None:
        out["amari_distance"] = recovered
    if objective.spread is None:
        return out
    kernel = objective.spread.kernel_at(objective.step)
    grids = None
    if cache is not None:  # the grids of the current σ only (an annealed σ changes each time)
        for stale in [k for k in cache if k != kernel]:
            del cache[stale]
        grids = cache.setdefault(kernel, {})
    p_tilde = spread_data(data, kernel)
    q_tilde = spread_model(model, kernel)
    if not p_tilde.has_density or q_tilde is None:
        return out
    truth = ground_truth_metrics(p_tilde, q_tilde, generator, points, pis, extra, cache=grids)
    out.update({f"spread_{key}": value for key, value in truth.items()})
    return out


def displayed_data(data: ToyData, objective: Objective) -> ToyData:
    """The density the figures draw under the samples: P̃ at the final σ for objectives with
    spread noise (where it is known), else the data; zero-width curves are drawn thickened to
    the figures' resolution (1% of their span)."""
    if objective.spread is not None:
        p_tilde = spread_data(data, SpreadKernel(objective.spread.kind, objective.spread.sigma))
        if p_tilde.has_density:
            return p_tilde
    if isinstance(data, Curve) and data.degenerate:
        return data.thickened(data.length_scale())
    return data
