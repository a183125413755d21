"""Spread kernels (Zhang, Hayes, Bird, Habib & Barber 2018, "Spread Divergence").

A spread kernel K adds the same noise to data and model: p̃ = p * K, q̃ = q * K. With a kernel whose
Fourier transform is strictly positive (Gaussian, Laplace) KL(p̃‖q̃) is defined for any p and q,
and is zero only when p = q (their §3), so it can fit generators whose own density does not exist.

`objective.sigma` is the noise's standard deviation per coordinate for both kernels: the Laplace
kernel's scale is b = σ/√2. Everything here is pure: tensors in, tensors out, randomness only
through an explicit ``torch.Generator``. This module knows no dataset: the curves
(`gandiv.data.manifold`) build their densities on its kernels, and P̃ and Q̃ of a run are
`gandiv.evaluation.spread`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "KERNELS",
    "SpreadKernel",
    "SpreadNoise",
    "atoms_log_prob",
    "atoms_log_prob_grid",
    "laplace_sample",
]

KERNELS = ("gaussian", "laplace")
# Largest share of the probability mass that a spread density's `bounds()` may leave outside.
_MASS_OUTSIDE = 1e-7
# Most elements of the largest temporary in a chunked evaluation.
_CHUNK_ELEMENTS = 1 << 22
_SQRT2 = math.sqrt(2.0)
# `atoms_log_prob_grid`: tiles of TILE × TILE grid points share one set of atoms; an atom whose
# term lies PRUNE_NATS below the largest term everywhere on a tile is left out of that tile's sum
# (e^-50 per atom: below float64's rounding of the sum for up to 10^5 atoms).
TILE = 4
PRUNE_NATS = 50.0
UNDERFLOW_NATS = 200.0


def laplace_sample(
    shape: tuple[int, ...],
    scale: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Independent Laplace(0, scale) draws by the inverse CDF, on ``generator.device``."""
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype) - 0.5
    tiny = torch.finfo(dtype).eps  # rand may return 0 exactly: log1p(−1) = −inf
    u = u.clamp(-0.5 + tiny, 0.5 - tiny)
    return -scale * u.sign() * torch.log1p(-2.0 * u.abs())


def _log_erfc_term(x: Tensor, s: float, b: float) -> Tensor:
    """log[exp(s²/2b²) · exp(−x/b) · erfc((s/b − x/s)/√2)], without overflow or underflow.

    For u = (s/b − x/s)/√2 > 0, erfc(u) = erfcx(u) e^{−u²} and the exponents cancel to −x²/2s².
    """
    u = (s / b - x / s) / _SQRT2
    positive = -0.5 * (x / s).square() + torch.special.erfcx(u.clamp(min=0.0)).log()
    negative = 0.5 * (s / b) ** 2 - x / b + torch.erfc(u.clamp(max=0.0)).log()
    return torch.where(u > 0, positive, negative)


@dataclass(frozen=True)
class SpreadKernel:
    """A product kernel K(d) = Π_i k(d_i): ``gaussian`` N(0, σ²) or ``laplace`` with std σ."""

    kind: str
    sigma: float

    def __post_init__(self) -> None:
        if self.kind not in KERNELS:
            raise ValueError(f"noise must be one of {', '.join(KERNELS)}, got {self.kind!r}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a positive finite std, got {self.sigma!r}")

    @property
    def laplace_scale(self) -> float:
        """b = σ/√2 (the Laplace kernel's scale)."""
        return self.sigma / _SQRT2

    def sample(
        self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """Noise of the given shape (on ``generator.device``)."""
        if self.kind == "gaussian":
            eps = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
            return self.sigma * eps
        return laplace_sample(shape, self.laplace_scale, generator, dtype)

    def add_noise(
        self,
        x: Tensor,
        generator: torch.Generator,
        copies: int = 1,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """`copies` noisy copies x + ε of each row of x; the noise is drawn in `dtype` (default:
        x's own, with no float64 detour: instance noise on image batches) and added in x's."""
        noise = self.noise_for(tuple(x.shape), copies, generator, dtype or x.dtype)
        if copies > 1:
            x = x.repeat_interleave(copies, dim=0)
        return x + noise.to(x)

    def noise_for(
        self, shape: tuple[int, ...], copies: int, generator: torch.Generator, dtype: torch.dtype
    ) -> Tensor:
        """The noise `add_noise` draws for x of this shape: one row per copy of each row of x."""
        return self.sample((shape[0] * copies, *shape[1:]), generator, dtype)

    def log_prob(self, d: Tensor, width: float = 0.0) -> Tensor:
        """log (K * N(0, width² I))(d), summed over the last dimension of the offsets `d`.

        width = 0 gives log K(d). Gaussian: N(0, σ² + width²). Laplace with width > 0: the
        normal–Laplace convolution (1/4b) e^{s²/2b²}[e^{−x/b} erfc((s/b − x/s)/√2) + (x → −x)].
        """
        if self.kind == "gaussian":
            var = self.sigma**2 + width**2
            return (-0.5 * d.square() / var).sum(-1) - 0.5 * d.shape[-1] * math.log(
                2 * math.pi * var
            )
        b = self.laplace_scale
        if width == 0:
            return (-d.abs() / b).sum(-1) - d.shape[-1] * math.log(2 * b)
        both = torch.logaddexp(_log_erfc_term(d, width, b), _log_erfc_term(-d, width, b))
        return both.sum(-1) - d.shape[-1] * math.log(4 * b)

    def tail(self, width: float, dim: int) -> float:
        """A half-width t such that K * N(0, width²) leaves < 1e-7 of its mass outside ±t per
        coordinate, summed over `dim` coordinates (union bound)."""
        per_coordinate = _MASS_OUTSIDE / (2 * dim)
        z = float(-torch.special.ndtri(torch.tensor(per_coordinate, dtype=torch.float64)))
        if self.kind == "gaussian":
            return z * math.sqrt(self.sigma**2 + width**2)
        # Laplace tail e^{−t/b}/2 beyond t, plus the Gaussian part's own tail.
        return self.laplace_scale * math.log(0.5 / per_coordinate) + z * width

    def std(self, width: float = 0.0) -> float:
        """The per-coordinate std of K * N(0, width²)."""
        return math.sqrt(self.sigma**2 + width**2)

    def resolution(self, width: float = 0.0) -> float:
        """Arc length of curve per 8-node quadrature panel: the std of K * N(0, width²), a
        quarter of it for the Laplace kernel, whose cusp limits the rule to second order
        (relative error in p̃ ≈ 3e-4 then, against ≈ 5e-3 with one panel per std)."""
        return self.std(width) / (4 if self.kind == "laplace" else 1)


@dataclass(frozen=True)
class SpreadNoise:
    """The spread noise of an objective: a kernel whose σ may be annealed geometrically.

    σ_t = sigma_start · (sigma / sigma_start)^{min(t / anneal_steps, 1)} at training step t, so σ
    moves from `sigma_start` to `sigma` over `anneal_steps` steps and stays there.
    """

    kind: str
    sigma: float
    sigma_start: float | None = None
    anneal_steps: int = 0

    def __post_init__(self) -> None:
        SpreadKernel(self.kind, self.sigma)  # checks kind and sigma
        if (self.sigma_start is None) != (self.anneal_steps == 0):
            raise ValueError(
                "annealing needs both sigma_start and anneal_steps > 0 (or neither), got "
                f"sigma_start={self.sigma_start}, anneal_steps={self.anneal_steps}"
            )
        if self.sigma_start is not None:
            SpreadKernel(self.kind, self.sigma_start)

    def sigma_at(self, step: int) -> float:
        if self.sigma_start is None:
            return self.sigma
        progress = min(step / self.anneal_steps, 1.0)
        return self.sigma_start * (self.sigma / self.sigma_start) ** progress

    def kernel_at(self, step: int) -> SpreadKernel:
        return SpreadKernel(self.kind, self.sigma_at(step))


def atoms_log_prob(
    y: Tensor, centres: Tensor, log_weights: Tensor, kernel: SpreadKernel, width: float = 0.0
) -> Tensor:
    """log Σ_j w_j (K * N(0, width²))(y − c_j) for points y (..., d), in float64.

    The spread density of a (weighted) set of atoms c_j: a quadrature rule over a curve, or a
    Gaussian mixture's centres. Gaussian kernels use one matrix product per chunk of points.
    """
    flat = y.reshape(-1, y.shape[-1]).to(torch.float64)
    c = centres.to(device=flat.device, dtype=torch.float64)
    lw = log_weights.to(device=flat.device, dtype=torch.float64)
    parts = []
    if kernel.kind == "gaussian":
        var = kernel.sigma**2 + width**2
        bias = lw - c.square().sum(1) / (2 * var)
        log_norm = -0.5 * c.shape[1] * math.log(2 * math.pi * var)
        rows = max(1, _CHUNK_ELEMENTS // max(len(c), 1))
        for block in flat.split(rows):
            exponent = torch.addmm(bias, block, c.T / var)
            parts.append(torch.logsumexp(exponent, 1) - block.square().sum(1) / (2 * var))
        out = torch.cat(parts) + log_norm if parts else flat.new_empty(0)
    else:
        rows = max(1, _CHUNK_ELEMENTS // max(len(c) * c.shape[1], 1))
        for block in flat.split(rows):
            log_k = kernel.log_prob(block[:, None, :] - c[None], width)
            parts.append(torch.logsumexp(log_k + lw, 1))
        out = torch.cat(parts) if parts else flat.new_empty(0)
    return out.reshape(y.shape[:-1])


def _logsumexp_last(values: Tensor) -> Tensor:
    """logsumexp over the last dimension, in place on `values`; terms more than UNDERFLOW_NATS
    below the largest count as e^-UNDERFLOW_NATS of it (a relative change below 1e-80 per term),
    which keeps `exp` off its slow path for arguments that underflow."""
    top = values.max(dim=-1, keepdim=True).values
    total = values.sub_(top).clamp_(min=-UNDERFLOW_NATS).exp_().sum(dim=-1)
    return total.log_() + top.squeeze(-1)


def _axis_bounds(axis: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Per tile of TILE consecutive points of an ascending `axis` and per atom coordinate: the
    least and the largest squared offset, each (tiles, atoms)."""
    starts = torch.arange(0, len(axis), TILE, device=axis.device)
    low = axis[starts][:, None]
    high = axis[(starts + TILE - 1).clamp(max=len(axis) - 1)][:, None]
    near = torch.maximum(low - centres, centres - high).clamp_min(0)
    far = torch.maximum(centres - low, high - centres)
    return near.square(), far.square()


def atoms_log_prob_grid(
    axes: tuple[Tensor, ...],
    points: Tensor,
    centres: Tensor,
    log_weights: Tensor,
    kernel: SpreadKernel,
    width: float = 0.0,
) -> Tensor:
    """`atoms_log_prob` at `points`, the product grid of `axes` (ascending; meshgrid "ij",
    row-major), in float64: the same sums at a fraction of the cost for Gaussian kernels in 2-D.

    The grid is cut into tiles of TILE × TILE points. On each tile an atom's term
    log w_j − ‖x − c_j‖²/2v is bounded above and below by the tile's nearest and farthest corner
    offsets; the atoms whose upper bound lies PRUNE_NATS below the largest lower bound cannot
    change the sum in float64 and are left out, and the rest are summed with exact offsets
    (no ‖x‖² − 2x·c + ‖c‖² expansion). Near a curve of atoms a tile keeps the atoms of its
    stretch of curve; far from it, those of the nearest stretch, so the cost is a small share of
    the full points × atoms sum. Other kernels and dimensions take `atoms_log_prob`.
    """
    if kernel.kind != "gaussian" or len(axes) != 2 or centres.shape[-1] != 2:
        return atoms_log_prob(points, centres, log_weights, kernel, width)
    a0, a1 = (a.to(torch.float64) for a in axes)
    c = centres.to(device=a0.device, dtype=torch.float64)
    lw = log_weights.to(device=a0.device, dtype=torch.float64)
    var2 = 2 * (kernel.sigma**2 + width**2)
    near0, far0 = _axis_bounds(a0, c[:, 0])
    near1, far1 = _axis_bounds(a1, c[:, 1])
    n0, n1 = len(a0), len(a1)
    tiles1 = len(near1)
    # the second axis padded to whole tiles (the padding's sums are dropped)
    pad1 = torch.cat([a1, a1[-1:].expand(tiles1 * TILE - n1)]).reshape(tiles1, TILE)
    rows = []
    for t0, start in enumerate(range(0, n0, TILE)):
        x0 = a0[start : start + TILE]  # (r,)
        upper = lw - (near0[t0] + near1) / var2  # (tiles1, atoms)
        lower = lw - (far0[t0] + far1) / var2
        keep = upper >= lower.max(dim=1, keepdim=True).values - PRUNE_NATS
        kept = int(keep.sum(dim=1).max())
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :kept]
        sel_lw = torch.where(keep.gather(1, order), lw[order], -math.inf)  # (tiles1, kept)
        sel = c[order]  # (tiles1, kept, 2)
        d0 = (x0[:, None, None] - sel[None, :, :, 0]).square().transpose(0, 1)  # (tiles1, r, kept)
        d1 = (pad1[:, :, None] - sel[:, None, :, 1]).square()  # (tiles1, TILE, kept)
        exponent = d0[:, :, None, :] + d1[:, None, :, :]
        exponent = exponent.div_(-var2).add_(sel_lw[:, None, None, :])  # (tiles1, r, TILE, kept)
        block = _logsumexp_last(exponent)  # (tiles1, r, TILE)
        rows.append(block.transpose(0, 1).reshape(len(x0), tiles1 * TILE)[:, :n1])
    log_norm = -math.log(math.pi * var2)
    return (torch.cat(rows) + log_norm).reshape(-1)
