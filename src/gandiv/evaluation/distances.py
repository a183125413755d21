"""Distances between two samples (no densities needed)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def mmd2_unbiased(
    x: Tensor, y: Tensor, bandwidths: Sequence[float] | Tensor, gram: bool = False
) -> Tensor:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) with k = Σ_σ exp(−‖a − b‖² / 2σ²).

    The kernel is a sum of Gaussian kernels over `bandwidths` (numbers, or a 1-D tensor of them),
    characteristic for every σ > 0, so MMD² = 0 only when the two distributions are equal.
    x: (n, d), y: (m, d), n, m ≥ 2. With `gram` the squared distances are ‖a‖² + ‖b‖² − 2⟨a, b⟩
    (clamped at 0): matrix products forward and backward, for features of high dimension, where
    the backward pass of `torch.cdist` (elementwise, n·m·d terms) costs far more.
    """
    n, m = len(x), len(y)
    both = torch.cat([x, y])
    if gram:
        norms = both.pow(2).sum(dim=1)
        sq = (norms[:, None] + norms[None, :] - 2 * both @ both.T).clamp_min(0)
    else:
        sq = torch.cdist(both, both).pow(2)
    kernel = sum(torch.exp(-sq / (2 * s**2)) for s in bandwidths)
    assert isinstance(kernel, Tensor)
    k_xx, k_yy, k_xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    off_diagonal_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    off_diagonal_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return off_diagonal_xx + off_diagonal_yy - 2 * k_xy.mean()


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
