"""Distances between two samples (no densities needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

# Kernel exponents −‖a − b‖²/2σ² below this count as this: e^-80 ≈ 2e-35 of a kernel's largest
# value (1), below float32's normal numbers, and it keeps `exp` off its slow path for arguments that
# underflow (10–20× slower on a CPU).
_EXPONENT_FLOOR = -80.0


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """‖a_i − b_j‖² as ‖a_i‖² + ‖b_j‖² − 2⟨a_i, b_j⟩ (one matrix product), clamped at 0."""
    return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2 * a @ b.T).clamp_min_(0)


class _KernelSum(torch.autograd.Function):
    """Σ_r exp(−r·d) elementwise over the squared distances d for rates r = 1/2σ², with its
    derivative −Σ_r r·exp(−r·d) kept from the same pass: one exponential per entry and bandwidth,
    forward and backward together."""

    @staticmethod
    def forward(ctx: Any, sq: Tensor, rates: Tensor) -> Tensor:
        total = torch.zeros_like(sq)
        slope = torch.zeros_like(sq) if ctx.needs_input_grad[0] else None
        for rate in rates.unbind():
            term = torch.mul(sq, -rate).clamp_min_(_EXPONENT_FLOOR).exp_()
            total.add_(term)
            if slope is not None:
                slope.add_(term.mul_(rate))
        ctx.save_for_backward(slope)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (slope,) = ctx.saved_tensors
        return -grad * slope, None


def _kernel_block_sum(a: Tensor, b: Tensor, rates: Tensor, skip_diagonal: bool) -> Tensor:
    kernel = _KernelSum.apply(_squared_distances(a, b), rates)
    assert isinstance(kernel, Tensor)
    total = kernel.sum()
    return total - kernel.diagonal().sum() if skip_diagonal else total


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidths: Sequence[float] | Tensor) -> Tensor:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) with k = Σ_σ exp(−‖a − b‖² / 2σ²).

    The kernel is a sum of Gaussian kernels over `bandwidths` (numbers, or a 1-D tensor of them),
    characteristic for every σ > 0, so MMD² = 0 only when the two distributions are equal.
    x: (n, d), y: (m, d), n, m ≥ 2. Each of the three blocks (x–x, y–y, x–y) takes its squared
    distances from one matrix product, ‖a‖² + ‖b‖² − 2⟨a, b⟩ clamped at 0, shared by every
    bandwidth, and its kernel's derivative from the same exponentials (`_KernelSum`); the x–x
    block is computed without gradients unless x needs them (a data batch does not). Exponents
    below −80 count as −80 (`_EXPONENT_FLOOR`).
    """
    n, m = len(x), len(y)
    rates = torch.as_tensor(bandwidths, dtype=x.dtype, device=x.device).square().mul(2).reciprocal()
    with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
        within_x = _kernel_block_sum(x, x, rates, skip_diagonal=True) / (n * (n - 1))
    within_y = _kernel_block_sum(y, y, rates, skip_diagonal=True) / (m * (m - 1))
    cross = _kernel_block_sum(x, y, rates, skip_diagonal=False) / (n * m)
    return within_x + within_y - 2 * cross


# Bandwidths of `sample_distances`' MMD: the median pairwise distance times these factors.
MMD_BANDWIDTH_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
# Rows of a pairwise-distance block at a time (bounds memory at about 4M entries).
_CHUNK_ELEMENTS = 1 << 22
# Points of the pooled sample whose pairwise distances give the median heuristic.
_MEDIAN_POINTS = 2048


def _pairwise_distance_sum(a: Tensor, b: Tensor) -> Tensor:
    """Σ_ij ‖a_i − b_j‖ in float64, in row blocks (exact differences, no ‖a‖² − 2ab + ‖b‖²)."""
    a, b = a.double(), b.double()
    rows = max(1, _CHUNK_ELEMENTS // max(1, len(b)))
    total = a.new_zeros(())
    for block in a.split(rows):
        total = total + torch.cdist(block, b, compute_mode="donot_use_mm_for_euclid_dist").sum()
    return total


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    """Energy distance (Székely & Rizzo 2013, eq. 2.1) 2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖.

    The cross term is the mean over all n·m pairs, the within terms are U-statistics (means over
    i ≠ j), so the estimate is unbiased and ≈ 0 (either sign) for equal distributions; its
    population value is ≥ 0 with equality only for P = Q. x: (n, d), y: (m, d), n, m ≥ 2. Float64.
    """
    n, m = len(x), len(y)
    if n < 2 or m < 2 or x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"need samples of shape (n, d) and (m, d) with n, m ≥ 2, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    cross = _pairwise_distance_sum(x, y) / (n * m)
    within_x = _pairwise_distance_sum(x, x) / (n * (n - 1))  # the diagonal is exactly 0
    within_y = _pairwise_distance_sum(y, y) / (m * (m - 1))
    return 2 * cross - within_x - within_y


def _wasserstein_1d(a: Tensor, b: Tensor) -> Tensor:
    """W₁ between the empirical measures of the columns of a (n, k) and b (m, k): shape (k,).

    W₁ = ∫₀¹ |F⁻¹(t) − G⁻¹(t)| dt with step quantile functions, integrated exactly over the merged
    breakpoints {i/n} ∪ {j/m} (for n = m: the mean of |a_(i) − b_(i)|).
    """
    n, m = len(a), len(b)
    a_sorted, b_sorted = a.sort(dim=0).values, b.sort(dim=0).values
    t = torch.cat(
        [
            torch.arange(1, n + 1, dtype=torch.float64, device=a.device) / n,
            torch.arange(1, m + 1, dtype=torch.float64, device=a.device) / m,
        ]
    ).unique()  # sorted, ends at 1
    widths = torch.diff(t, prepend=t.new_zeros(1))
    middle = t - 0.5 * widths
    index_a = (middle * n).floor().long().clamp(max=n - 1)
    index_b = (middle * m).floor().long().clamp(max=m - 1)
    gaps = (a_sorted[index_a] - b_sorted[index_b]).abs()  # (breakpoints, k)
    return (widths[:, None] * gaps).sum(dim=0)


def sliced_wasserstein(
    x: Tensor, y: Tensor, generator: torch.Generator, projections: int = 256
) -> Tensor:
    """Sliced Wasserstein-1 distance (Rabin et al. 2011; Bonneel et al. 2015): the mean over
    `projections` random unit directions θ (uniform on the sphere) of W₁(⟨θ, X⟩, ⟨θ, Y⟩).

    Each 1-D W₁ is exact between the projected empirical measures (sorted projections; samples of
    different sizes by their step quantile functions). x: (n, d), y: (m, d). Float64.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 1 or len(y) < 1:
        raise ValueError(
            f"need non-empty samples of shape (n, d) and (m, d), got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if projections < 1:
        raise ValueError(f"projections must be ≥ 1, got {projections}")
    theta = torch.randn(
        x.shape[1], projections, generator=generator, device=generator.device, dtype=torch.float64
    )
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    return _wasserstein_1d(x.double() @ theta, y.double() @ theta).mean()


def median_distance(points: Tensor) -> Tensor:
    """Median of the pairwise distances ‖a_i − a_j‖, i < j (the median heuristic; Gretton et al.
    2012, §8), float64, over the first `_MEDIAN_POINTS` points (2M pairs; `torch.quantile`
    takes at most 2^24 values)."""
    points = points[:_MEDIAN_POINTS]
    dist = torch.cdist(
        points.double(), points.double(), compute_mode="donot_use_mm_for_euclid_dist"
    )
    upper = torch.triu_indices(len(points), len(points), offset=1, device=points.device)
    return torch.quantile(dist[upper[0], upper[1]], 0.5)


def _subset(x: Tensor, size: int, generator: torch.Generator) -> Tensor:
    if len(x) <= size:
        return x
    order = torch.randperm(len(x), generator=generator, device=generator.device)
    return x[order[:size].to(x.device)]


def sample_distances(
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    projections: int = 256,
    max_samples: int = 2048,
) -> dict[str, float]:
    """MMD², energy distance and sliced Wasserstein between the samples x (data) and y (model).

    ``mmd``: `mmd2_unbiased` with the bandwidths σ = s · MMD_BANDWIDTH_SCALES (0.25, 0.5, 1, 2, 4),
    s the median pairwise distance of the pooled sample (the median heuristic, over at most 2048
    pooled points; s = 1 if that median is 0), so the kernels follow the data's scale.
    ``energy``: `energy_distance`. Both cost O(n²) time and memory, so each sample is first cut to
    a random subset of `max_samples` points. ``sliced_wasserstein``: `sliced_wasserstein` over
    `projections` directions, on all points. Randomness only from `generator`.
    """
    x_sub, y_sub = _subset(x, max_samples, generator), _subset(y, max_samples, generator)
    pooled = _subset(torch.cat([x_sub, y_sub]), _MEDIAN_POINTS, generator)
    scale = float(median_distance(pooled))
    scale = scale if scale > 0 else 1.0  # every pooled point equal: any bandwidth will do
    bandwidths = [scale * factor for factor in MMD_BANDWIDTH_SCALES]
    return {
        "mmd": float(mmd2_unbiased(x_sub.double(), y_sub.double(), bandwidths)),
        "energy": float(energy_distance(x_sub, y_sub)),
        "sliced_wasserstein": float(sliced_wasserstein(x, y, generator, projections)),
    }
