"""Ground truth between the spread distributions P̃ = P * K and Q̃ = Q * K.

Q̃(y) = ∫ K(y − G(z)) p(z) dz of a deterministic generator is exact here in two cases: a linear
generator with a Gaussian prior and Gaussian noise, N(b, AAᵀ + σ²I) (probabilistic PCA); and any
generator with a one-dimensional latent, by composite Gauss–Legendre quadrature over z with one
8-node panel per σ of the curve G traces (per σ/4 for the Laplace kernel). P̃ = P * K is
`spread_data`'s: by the same quadrature along a data curve, in closed form for Gaussian mixtures.
With both, KL(P̃‖Q̃), KL(Q̃‖P̃), JS ... are the ground-truth
machinery's (quadrature on a grid in 1-D/2-D, Monte Carlo otherwise), reported as
``spread_kl_pq`` etc.

The functions here take the objective's spread noise (`SpreadNoise`, or its kernel at the
current σ), not the objective: evaluation sits below the objectives in the layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gandiv.data.manifold import ICA, Curve, amari_distance, composite_gauss_legendre, curve_panels
from gandiv.data.spread import SpreadKernel, SpreadNoise, atoms_log_prob, atoms_log_prob_grid
from gandiv.data.toy import Mixture, SwissRoll, ToyData
from gandiv.divergences import FDivergence
from gandiv.evaluation.ground_truth import ground_truth_metrics
from gandiv.models.base import GenerativeModel, LatentGenerator
from gandiv.models.linear import LAPLACE_SCALE, LinearGenerator

__all__ = [
    "SpreadData",
    "SpreadModel",
    "displayed_data",
    "has_spread_metrics",
    "spread_data",
    "spread_metrics",
    "spread_model",
]

# Half-width of the latent range integrated over: the prior's mass outside is below 1e-9.
_GAUSSIAN_RANGE = 6.5
_LAPLACE_RANGE = LAPLACE_SCALE * math.log(1e9)


class SpreadData(ToyData):
    """p̃ = p * K: the data with spread noise added; samples x + ε, and log p̃ when it is known.

    `log_density` is None when p̃ has no closed form or quadrature here (then `has_density` is
    False and only sampling is available).
    """

    def __init__(
        self,
        data: ToyData,
        kernel: SpreadKernel,
        log_density: Callable[[Tensor], Tensor] | None,
        extent: Tensor,
        width: float,
        atoms: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.data, self.kernel, self.dim = data, kernel, data.dim
        self._log_density = log_density
        self._atoms = atoms  # (centres, log weights) where log p̃ is their `atoms_log_prob`
        self.has_density = log_density is not None
        self._extent = extent  # (dim, 2) box of the noise-free support or of the data's box
        self._width = width

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        x = self.data.sample(n, generator)
        return (x.to(torch.float64) + self.kernel.sample(tuple(x.shape), generator)).float()

    def log_prob(self, x: Tensor) -> Tensor:
        self._check_x(x)
        if self._log_density is None:
            raise NotImplementedError("the spread density of this dataset is not available")
        return self._log_density(x).to(x.dtype if x.is_floating_point() else torch.float32)

    def log_prob_grid(self, axes: tuple[Tensor, ...], points: Tensor) -> Tensor:
        if self._atoms is None:
            return self.log_prob(points)
        self._check_x(points)
        centres, log_w = self._atoms
        out = atoms_log_prob_grid(axes, points, centres, log_w, self.kernel, self._width)
        return out.to(points.dtype if points.is_floating_point() else torch.float32)

    def bounds(self) -> Tensor:
        pad = self.kernel.tail(self._width, self.dim)
        return torch.stack([self._extent[:, 0] - pad, self._extent[:, 1] + pad], dim=1)

    def length_scale(self) -> float:
        return self.kernel.std(self._width)


def _curve_spread(
    data: ToyData, curve: Callable[[Tensor], Tensor], width: float, kernel: SpreadKernel
) -> SpreadData:
    """p̃ for data uniform in u ∈ [0, 1] along c(u) (plus N(0, width²) noise), by quadrature."""
    dense = curve(torch.linspace(0.0, 1.0, 20_001, dtype=torch.float64))
    panels = curve_panels(dense, kernel.resolution(width))
    u, w = composite_gauss_legendre(0.0, 1.0, panels)
    centres, log_w = curve(u), w.log()
    extent = torch.stack([dense.min(0).values, dense.max(0).values], dim=1)
    return SpreadData(
        data,
        kernel,
        lambda y: atoms_log_prob(y, centres, log_w, kernel, width),
        extent,
        width,
        (centres, log_w),
    )


def _mixture_spread(data: Mixture, kernel: SpreadKernel) -> SpreadData:
    box = data.bounds()
    if kernel.kind == "gaussian":
        eye = torch.eye(data.dim, dtype=torch.float64)
        wider = Mixture(data.weights, data.means, data.covs + kernel.sigma**2 * eye)
        return SpreadData(data, kernel, wider.log_prob, box, 0.0)
    diagonal = torch.diag_embed(torch.diagonal(data.covs, dim1=-2, dim2=-1))
    if not torch.equal(diagonal, data.covs):
        return SpreadData(data, kernel, None, box, 0.0)
    stds = torch.diagonal(data.covs, dim1=-2, dim2=-1).sqrt()  # (K, d)

    def log_density(y: Tensor) -> Tensor:
        flat = y.reshape(-1, data.dim).to(torch.float64)
        parts = []
        for k in range(len(data.weights)):
            diff = flat - data.means[k].to(flat.device)
            per_axis = [
                kernel.log_prob(diff[:, i : i + 1], float(stds[k, i])) for i in range(data.dim)
            ]
            parts.append(torch.stack(per_axis).sum(0) + float(data.weights[k].log()))
        return torch.logsumexp(torch.stack(parts), 0).reshape(y.shape[:-1])

    return SpreadData(data, kernel, log_density, box, 0.0)


def spread_data(data: ToyData, kernel: SpreadKernel) -> SpreadData:
    """p̃ = p * K for a toy dataset: by quadrature along a curve (line, circle, Swiss roll), in
    closed form for Gaussian mixtures (Laplace noise: diagonal covariances only); otherwise
    sampling only."""
    if isinstance(data, Curve):
        return _curve_spread(data, data.curve, data.width, kernel)
    if isinstance(data, SwissRoll):
        return _curve_spread(data, data.curve, data.std, kernel)
    if isinstance(data, Mixture):
        return _mixture_spread(data, kernel)
    return SpreadData(data, kernel, None, data.bounds(), 0.0)


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

    def log_prob_grid(self, axes: tuple[Tensor, ...], points: Tensor) -> Tensor:
        if self._atoms is None:
            return self.log_prob(points)
        centres, log_w = self._atoms
        return atoms_log_prob_grid(axes, points, centres, log_w, self.kernel).to(points.dtype)


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


def has_spread_metrics(data: ToyData, model: GenerativeModel, noise: SpreadNoise | None) -> bool:
    """Whether `spread_metrics` reports anything for a run with this spread noise."""
    if _recovery(data, model) is not None:
        return True
    if noise is None:
        return False
    kernel = noise.kernel_at(0)
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
    kernel: SpreadKernel | None,
    generator: torch.Generator,
    points: int | None = None,
    pis: Sequence[float] = (),
    extra: Mapping[str, FDivergence] | None = None,
    cache: dict[Any, Any] | None = None,
) -> dict[str, float]:
    """``spread_kl_pq`` = KL(P̃‖Q̃), ``spread_kl_qp``, ``spread_js`` (and `pis`, `extra` rows)
    with the spread `kernel` (the objective's at its current σ; None: no spread noise) where both
    spread densities are known, and ``amari_distance`` for a linear generator on ICA data."""
    out: dict[str, float] = {}
    recovered = _recovery(data, model)
    if recovered is not None:
        out["amari_distance"] = recovered
    if kernel is None:
        return out
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


def displayed_data(data: ToyData, noise: SpreadNoise | None) -> ToyData:
    """The density the figures draw under the samples: P̃ at the final σ for objectives with
    spread `noise` (where it is known), else the data; zero-width curves are drawn thickened to
    the figures' resolution (1% of their span)."""
    if noise is not None:
        p_tilde = spread_data(data, SpreadKernel(noise.kind, noise.sigma))
        if p_tilde.has_density:
            return p_tilde
    if isinstance(data, Curve) and data.degenerate:
        return data.thickened(data.length_scale())
    return data
