"""Ground truth for implicit models: divergences from the data to a kernel-density estimate.

A model without a density (an MLP generator) is replaced by the Gaussian KDE of its M samples,
q̂(x) = (1/M) Σ_j N(x; s_j, h² I) (Parzen 1962). The result is a *labelled estimate* of the
divergences between the data P and q̂ — the model smoothed by N(0, h² I) plus sampling noise (for a
Gaussian model, E q̂ = the model with h² added to its covariance) — computed so that every kernel
counts wherever it lies. Each D_f(P‖Q̂) = ∫ q̂ f(p/q̂) dx is split at a box B holding all but < 1e-6
of P's mass:

    ∫_B  q̂ f(p/q̂) dx    midpoint rule on a grid of spacing ≤ h (every kernel resolved);
    ∫_B' q̂ f(p/q̂) dx    ½ E_p[1_B' g/m] + ½ E_q̂[1_B' g/m],  g = q̂ f(p/q̂),  m = (p + q̂)/2,

B' the complement of B: importance sampling from m (Nowozin et al.'s D_f as in
`monte_carlo_f_divergence`, restricted to B') with M draws from P and two exact draws s_j + h ε
from each kernel j. The second term is unbiased and log p is exact everywhere, so a kernel far from
the data adds its weight × E[log q̂ − log p] (≈ distance²/2σ², huge) to KL(Q̂‖P) and its weight ×
½ log 2 to JS, while KL(P‖Q̂) sees its mass missing from B, where log q̂ is exact (logsumexp). The
term's standard error comes from the two draws per kernel. B is the data's quadrature box, or a box
holding every kernel to 8 h when the grid budget resolves h over it (then only P's far tail is
sampled). The grid's mass of q̂ is checked against its exact mass in B,
(1/M) Σ_j Π_k [Φ((b_k − s_jk)/h) − Φ((a_k − s_jk)/h)].

Not used: the resubstitution mean of log q̂(s_j) − log p(s_j) over the samples themselves, which
mixes the model (the points) with q̂ (the density), counts each sample's own kernel (too high
wherever samples are sparse on the scale h) and has no matching estimator of KL(P‖Q) or JS.

The estimate is refused (every metric null, ``reliable`` false, a ``reason``) when it could
mislead: a sample that is not finite (the model's mass is nowhere q̂ can put it), fewer than
`MIN_SAMPLES` samples, a bandwidth above the data's smallest length scale (a wide kernel hides a
dropped mode), a grid that does not resolve q̂, or a Monte Carlo term too noisy to trust.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gandiv.data.toy import ToyData
from gandiv.divergences import FDivergence
from gandiv.evaluation.ground_truth import (
    MASS_TOLERANCE,
    MAX_POINTS,
    DataGrid,
    grid_points,
    quadrature_box,
)
from gandiv.evaluation.quadrature import Grid, ground_truth, ground_truth_rows, integrate

__all__ = [
    "MIN_SAMPLES",
    "kde_ground_truth",
    "kde_log_prob",
    "kde_log_prob_on_grid",
    "kde_mass_in_box",
    "scott_bandwidth",
]

# Most entries of a (points × samples) block at a time (bounds memory, not results).
_CHUNK_ELEMENTS = 1 << 22
# Cells of samples of the separable grid sum: at most 32 per axis, at most 4096 samples each;
# and the log of the smallest normal float64.
_CELLS_PER_AXIS = 32
_CELL_SAMPLES = 4096
_LOG_TINY = math.log(torch.finfo(torch.float64).tiny)
# kde_log_prob skips kernels below e^−(log M + this) of the largest at a point (< 1e-13 of q̂).
_DROP_MARGIN = 30.0
# The wide box holds every sample's kernel out to this many bandwidths.
_KERNEL_REACH = 8.0
# Fewest samples per dimension: below, q̂ is a set of isolated bumps at the capped bandwidth
# (the data's narrowest feature) and its divergences measure the estimate's own noise.
MIN_SAMPLES = {1: 100, 2: 1000}
# The Monte Carlo term is refused when its standard error exceeds this share of the metric
# plus this many nats.
_MC_RELATIVE_ERROR = 0.1
_MC_ABSOLUTE_ERROR = 0.01


def _log_kernel_sums(points: Tensor, samples: Tensor, bandwidth: float) -> Tensor:
    """logsumexp_j(−‖x − s_j‖² / 2h²) for each point, in blocks of points. Distances are
    differences first (not ‖x‖² + ‖s‖² − 2x·s), exact for points far from the origin."""
    rows = max(1, _CHUNK_ELEMENTS // len(samples))
    parts = [
        torch.logsumexp(
            -torch.cdist(block, samples, compute_mode="donot_use_mm_for_euclid_dist").square()
            / (2 * bandwidth**2),
            dim=1,
        )
        for block in points.split(rows)
    ]
    return torch.cat(parts) if parts else points.new_empty(0)


def _boxes(x: Tensor, per_axis: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The rows of x grouped by the cells of a `per_axis`^d grid over their box: (order making
    each group contiguous, group sizes, each group's own bounding box low and high)."""
    low = x.min(dim=0).values
    side = ((x.max(dim=0).values - low) / per_axis).clamp(min=torch.finfo(x.dtype).tiny)
    index = ((x - low) / side).floor().long().clamp(max=per_axis - 1)
    key = (index * per_axis ** torch.arange(x.shape[1], device=x.device)).sum(dim=1)
    key, order = key.sort()
    group = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    inverse, counts = group[1], group[2]
    sorted_x = x[order]
    spread = inverse[:, None].expand_as(sorted_x)
    box_low = x.new_empty(len(counts), x.shape[1])
    box_high = x.new_empty(len(counts), x.shape[1])
    box_low.scatter_reduce_(0, spread, sorted_x, "amin", include_self=False)
    box_high.scatter_reduce_(0, spread, sorted_x, "amax", include_self=False)
    return order, counts, box_low, box_high


def kde_log_prob(points: Tensor, samples: Tensor, bandwidth: float) -> Tensor:
    """log q̂(x) = logsumexp_j(−‖x − s_j‖² / 2h²) − log M − (d/2) log(2πh²), in float64.

    points: (N, d), samples: (M, d). Large problems group points and samples by grid cells and
    skip, for each group of points, every cell of samples farther (box to box) than
    √(u² + 2h²(log M + 30)), u the largest distance to some cell's box: each point's nearest
    sample lies within u, so the skipped kernels add < M·e^−(log M + 30) = 1e-13 of q̂. Samples far
    apart (a diverged generator) then cost far less than N × M kernels.
    """
    if points.ndim != 2 or samples.ndim != 2 or points.shape[1] != samples.shape[1]:
        raise ValueError(
            f"need points (N, d) and samples (M, d), got {tuple(points.shape)} and "
            f"{tuple(samples.shape)}"
        )
    if len(samples) == 0 or not bandwidth > 0:
        raise ValueError(f"need M ≥ 1 samples and bandwidth > 0, got {len(samples)}, {bandwidth}")
    s = samples.detach().to(device=points.device, dtype=torch.float64)
    x = points.detach().to(torch.float64)
    m, d = s.shape
    log_norm = -math.log(m) - 0.5 * d * math.log(2 * math.pi * bandwidth**2)
    if len(x) * m <= _CHUNK_ELEMENTS:
        return _log_kernel_sums(x, s, bandwidth) + log_norm
    per_axis = max(2, round(_CELLS_PER_AXIS ** (2 / d)))  # about 1024 cells in any dimension
    s_order, s_counts, s_low, s_high = _boxes(s, per_axis)
    s = s[s_order]
    x_order, x_counts, x_low, x_high = _boxes(x, per_axis)
    reach = 2 * bandwidth**2 * (math.log(m) + _DROP_MARGIN)
    out = x.new_empty(len(x))
    for index, low, high in zip(x_order.split(x_counts.tolist()), x_low, x_high, strict=True):
        nearest = torch.maximum(s_low - high, low - s_high).clamp(min=0).square().sum(dim=1)
        farthest = torch.maximum(high - s_low, s_high - low).square().sum(dim=1)
        keep = nearest <= farthest.min() + reach
        kept = s if bool(keep.all()) else s[keep.repeat_interleave(s_counts)]
        out[index] = _log_kernel_sums(x[index], kept, bandwidth)
    return out + log_norm


def _cells(samples: Tensor, bandwidth: float) -> list[Tensor]:
    """The samples grouped by square cells of side max(2h, span/32), each cut into ≤ 4096 rows."""
    low = samples.min(dim=0).values
    span = float((samples.max(dim=0).values - low).max())
    side = max(2.0 * bandwidth, span / _CELLS_PER_AXIS)
    index = ((samples - low) / side).floor().long()  # (M, 2)
    key = index[:, 0] * (int(index[:, 1].max()) + 1) + index[:, 1]
    key, order = key.sort()
    counts = torch.unique_consecutive(key, return_counts=True)[1].tolist()
    return [part for cell in samples[order].split(counts) for part in cell.split(_CELL_SAMPLES)]


def kde_log_prob_on_grid(grid: Grid, samples: Tensor, bandwidth: float) -> Tensor:
    """`kde_log_prob` at the points of a 1-D or 2-D `grid`, fast on a 2-D grid.

    The Gaussian kernel factorises over coordinates, so on an n₁ × n₂ grid the sum over a cell of
    samples is one matrix product A Bᵀ with A_ij = exp(−(u_i − s_j1)²/2h² − a_i), a_i the largest
    exponent of row i in the cell (B likewise); cells (squares of side ≈ 2h, so that one sample
    nearly attains both maxima) are combined by logaddexp. Each term lost to underflow is below
    2.2e-308·e^(a_i+b_k); wherever the lost terms could exceed 1e-13 of the total, `kde_log_prob`
    recomputes the point.
    """
    if len(grid.shape) != 2:
        return kde_log_prob(grid.points, samples, bandwidth)
    s = samples.detach().to(device=grid.points.device, dtype=torch.float64)
    n1, n2 = grid.shape
    mesh = grid.points.reshape(n1, n2, 2)
    u, w = mesh[:, 0, 0], mesh[0, :, 1]
    scale = -0.5 / bandwidth**2
    log_total = u.new_full((n1, n2), -math.inf)
    top = u.new_full((n1, n2), -math.inf)  # largest a_i + b_k over cells
    for cell in _cells(s, bandwidth):
        exponent_u = scale * (u[:, None] - cell[None, :, 0]).square()  # (n1, cell)
        exponent_w = scale * (w[:, None] - cell[None, :, 1]).square()  # (n2, cell)
        max_u = exponent_u.max(dim=1, keepdim=True).values
        max_w = exponent_w.max(dim=1, keepdim=True).values
        total = torch.exp(exponent_u - max_u) @ torch.exp(exponent_w - max_w).T
        shift = max_u + max_w.T
        log_total = torch.logaddexp(log_total, total.log() + shift)
        top = torch.maximum(top, shift)
    log_norm = -math.log(len(s)) - math.log(2 * math.pi * bandwidth**2)
    out = (log_total + log_norm).reshape(-1)
    # lost ≤ M · 2.2e-308 · e^top; recompute where that exceeds 1e-13 of the computed total
    unsure = (log_total - top < math.log(len(s)) + _LOG_TINY + 30.0).reshape(-1)
    if bool(unsure.any()):
        out[unsure] = kde_log_prob(grid.points[unsure], s, bandwidth)
    return out


def kde_mass_in_box(samples: Tensor, bandwidth: float, low: Tensor, high: Tensor) -> float:
    """∫_[low, high] q̂ dx = (1/M) Σ_j Π_k [Φ((high_k − s_jk)/h) − Φ((low_k − s_jk)/h)], exactly.

    Each difference is taken on the side of the tail it lies in, so that kernels far outside the
    box contribute their (tiny) mass rather than the rounding error of 1 − 1.
    """
    s = samples.detach().to(torch.float64).cpu()
    z_low = (low.to(s) - s) / bandwidth
    z_high = (high.to(s) - s) / bandwidth
    ndtr = torch.special.ndtr
    per_axis = torch.where(z_low > 0, ndtr(-z_low) - ndtr(-z_high), ndtr(z_high) - ndtr(z_low))
    return float(per_axis.prod(dim=1).mean())


def scott_bandwidth(samples: Tensor) -> float:
    """Scott's rule (Scott 1992, eq. 6.42) h = n^(−1/(d+4)) · σ̄, σ̄ the mean over dimensions of the
    samples' standard deviations (an isotropic kernel)."""
    if samples.ndim != 2 or len(samples) < 2:
        raise ValueError(f"need samples of shape (n, d) with n ≥ 2, got {tuple(samples.shape)}")
    n, d = samples.shape
    sigma = float(samples.detach().to(torch.float64).std(dim=0).mean())
    return sigma * n ** (-1.0 / (d + 4))


def _finest_spacing(data: ToyData) -> float:
    """The grid spacing of the data's quadrature box at the largest grid: the narrowest kernel
    the quadrature resolves there."""
    low, high = quadrature_box(data)
    return float((high - low).max()) / MAX_POINTS[data.dim]


def _quadrature_box(
    data: ToyData, samples: Tensor, bandwidth: float, points: int | None
) -> tuple[Tensor, Tensor, int]:
    """(low, high, points per dimension) of the box B: every kernel to 8 h when a grid of spacing
    ≤ h over it fits the budget (`points`, else the largest grid), else the data's own box; the
    grid spacing is h/1.5 or as fine as the budget allows (never coarser than the data's grid)."""
    budget = points if points is not None else MAX_POINTS[data.dim]
    reach = _KERNEL_REACH * bandwidth
    corners = torch.stack([samples.min(dim=0).values - reach, samples.max(dim=0).values + reach])
    low, high = quadrature_box(data, corners)
    if float((high - low).max()) / budget > bandwidth:
        low, high = quadrature_box(data)
    if points is None:
        span = float((high - low).max())
        wanted = max(grid_points(data, low, high, None), math.ceil(1.5 * span / bandwidth))
        points = min(wanted, MAX_POINTS[data.dim])
    return low, high, points


def _outside_box(
    data: ToyData,
    samples: Tensor,
    bandwidth: float,
    low: Tensor,
    high: Tensor,
    rows: Mapping[str, FDivergence],
    generator: torch.Generator,
) -> tuple[dict[str, float], dict[str, float]]:
    """The Monte Carlo part ∫_B' q̂ f(p/q̂) dx of every row, and its standard error.

    ∫_B' g = ½ E_p[1_B' g/m] + ½ E_q̂[1_B' g/m] for m = (p + q̂)/2, where g/m = q̂ f(p/q̂)/m =
    2·perspective(log p − ℓ, log q̂ − ℓ), ℓ = log(p + q̂) (1-homogeneity: no overflow). E_p is the
    mean over M draws from P; E_q̂ over two independent draws s_j + h ε from each kernel j
    (stratified by kernel), whose difference gives an unbiased variance of the stratified mean,
    (1/M²) Σ_j (t_j1 − t_j2)²/4 (the spread between kernels is not noise).
    """
    m, d = samples.shape
    from_q = samples + bandwidth * torch.randn((2, m, d), generator=generator, dtype=torch.float64)
    from_p = data.sample(m, generator).to(torch.float64).cpu()

    def log_densities(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outside = ((x < low) | (x > high)).any(dim=1)
        log_p = data.log_prob(x[outside])
        log_q = kde_log_prob(x[outside], samples, bandwidth)
        log_sum = torch.logaddexp(log_p, log_q)
        # both densities underflow (a point beyond float64's squares): the point weighs 0
        log_sum = torch.where(log_sum == -math.inf, torch.zeros_like(log_sum), log_sum)
        return outside, log_p - log_sum, log_q - log_sum

    strata = [log_densities(from_p), log_densities(from_q.reshape(2 * m, d))]
    estimates, errors = {}, {}
    for key, row in rows.items():
        weights = []
        for outside, a, b in strata:
            weight = torch.zeros(len(outside), dtype=torch.float64)
            weight[outside] = 2.0 * row.perspective(a, b)
            weights.append(weight)
        at_p, at_q = weights[0], weights[1].reshape(2, m)
        scale = float(torch.cat(weights).abs().max())  # squares of weights near 1e160 overflow
        scale = scale if 0.0 < scale < math.inf else 1.0
        variance_p = float((at_p / scale).var()) / m
        variance_q = float(((at_q[0] - at_q[1]) / scale).square().sum()) / (4 * m**2)
        estimates[key] = 0.5 * (float(at_p.mean()) + float(at_q.mean()))
        errors[key] = 0.5 * scale * math.sqrt(variance_p + variance_q)
    return estimates, errors


def _refusal(
    rows: Mapping[str, FDivergence], bandwidth: float | None, n: int, reason: str
) -> dict[str, Any]:
    return {
        "method": "kde",
        "bandwidth": bandwidth,
        "n_samples": n,
        "reliable": False,
        "reason": reason,
        **dict.fromkeys(rows),
        "outside_box": None,
        "stderr": dict.fromkeys(rows),
        "infinite": [],
        "notes": [],
    }


def kde_ground_truth(
    data: ToyData,
    samples: Tensor,
    points: int | None = None,
    pis: Sequence[float] = (),
    bandwidth: float | None = None,
    extra: Mapping[str, FDivergence] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """KL(P‖Q̂) as ``kl_pq``, KL(Q̂‖P) as ``kl_qp``, ``js``, ``js_pi_<π>`` and `extra` rows (nats)
    between the data P and the Gaussian KDE Q̂ of `samples` (1-D/2-D only), as the module says.

    `bandwidth` h defaults to Scott's rule capped at the data's smallest length scale (Scott's
    rule alone suits unimodal samples and over-smooths multimodal ones: ring8's h ≈ 0.2 against
    component stds of 0.014), and floored at the finest grid spacing of the data's box (samples
    that all coincide get the narrowest kernel the grid resolves). `points` per dimension
    default to a spacing of h/1.5 within the data grid's limits; `generator` (CPU; default seed
    0) draws the Monte Carlo term.

    Returns ``method = "kde"``, ``bandwidth``, ``n_samples``, ``reliable``, ``reason`` (null
    unless refused) and the metrics; when reliable also ``outside_box`` (q̂'s exact mass outside
    the grid's box, counted by Monte Carlo), ``stderr`` (per metric, of that term), ``infinite``
    (the metrics beyond float64's range, +∞ for any practical purpose: JSON writes them null) and
    ``notes``. A refused estimate has every metric null and says why in ``reason``.
    """
    if data.dim > 2:
        raise ValueError(
            f"kde_ground_truth integrates on a grid: data of dimension 1 or 2 only, got {data.dim}"
        )
    if samples.ndim != 2 or samples.shape[1] != data.dim:
        raise ValueError(
            f"samples must have shape (n, {data.dim}), got shape {tuple(samples.shape)}"
        )
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    rows = ground_truth_rows(pis, extra)
    samples = samples.detach().to(torch.float64).cpu()
    n = len(samples)
    finite = torch.isfinite(samples).all(dim=1)
    if not bool(finite.all()):
        bad = n - int(finite.sum())
        return _refusal(
            rows,
            bandwidth,
            n,
            f"{bad} of {n} model samples are not finite (NaN or ±inf): the model puts that mass "
            "nowhere a density can hold it, so no estimate of q exists (the model has diverged)",
        )
    if n < MIN_SAMPLES[data.dim]:
        return _refusal(
            rows,
            bandwidth,
            n,
            f"{n} samples are too few for a kernel-density estimate in {data.dim}-D (at least "
            f"{MIN_SAMPLES[data.dim]}: raise eval.num_samples)",
        )
    length_scale, finest = data.length_scale(), _finest_spacing(data)
    if bandwidth is None:
        bandwidth = max(min(scott_bandwidth(samples), length_scale), finest)
    elif bandwidth > max(length_scale, finest):
        return _refusal(
            rows,
            bandwidth,
            n,
            f"bandwidth {bandwidth:.4g} exceeds the data's smallest length scale "
            f"{length_scale:.4g}: q̂ would smear the data's narrowest features and could hide a "
            "dropped mode (use a smaller eval.kde_bandwidth, or null for Scott's rule)",
        )

    low, high, points = _quadrature_box(data, samples, bandwidth, points)
    spacing = float((high - low).max()) / points
    if spacing > bandwidth:
        return _refusal(
            rows,
            bandwidth,
            n,
            f"the grid's spacing {spacing:.4g} ({points} points per axis) is coarser than the "
            f"bandwidth {bandwidth:.4g}: the midpoint rule would miss or double-count kernels "
            "(set a larger eval.kde_bandwidth, or more eval.grid_points)",
        )
    held = DataGrid(data, low, high, points)
    log_q = kde_log_prob_on_grid(held.grid, samples, bandwidth)
    inside = kde_mass_in_box(samples, bandwidth, low, high)
    on_grid = float(integrate(log_q.exp(), held.grid))
    if abs(on_grid - inside) > MASS_TOLERANCE:
        return _refusal(
            rows,
            bandwidth,
            n,
            f"the grid (spacing {spacing:.4g}) does not resolve kernels of bandwidth "
            f"{bandwidth:.4g}: q̂'s mass on it is {on_grid:.6g}, its exact mass in the box "
            f"{inside:.6g} (use a larger eval.kde_bandwidth or eval.grid_points)",
        )
    metrics = ground_truth(held.log_p.to(torch.float64), log_q, held.grid, pis, extra)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    far, errors = _outside_box(data, samples, bandwidth, low, high, rows, generator)
    notes, infinite = [], []
    outside = max(0.0, 1.0 - inside)
    if outside > 1e-6:
        box = " × ".join(f"[{a:.4g}, {b:.4g}]" for a, b in zip(low, high, strict=True))
        notes.append(
            f"{outside:.3%} of q̂'s mass lies outside the grid's box {box}; it is counted by "
            "Monte Carlo (see stderr)"
        )
    total = {key: metrics[key] + far[key] for key in rows}
    for key, value in total.items():
        if math.isnan(value):
            return _refusal(rows, bandwidth, n, f"{key} came out NaN (a numerical failure)")
        if math.isinf(value):
            infinite.append(key)
        elif errors[key] > _MC_RELATIVE_ERROR * abs(value) + _MC_ABSOLUTE_ERROR:
            return _refusal(
                rows,
                bandwidth,
                n,
                f"the Monte Carlo term for q̂'s {outside:.3%} of mass outside the grid is too "
                f"noisy: {key} = {value:.4g} ± {errors[key]:.2g} (raise eval.num_samples)",
            )
    return {
        "method": "kde",
        "bandwidth": bandwidth,
        "n_samples": n,
        "reliable": True,
        "reason": None,
        **total,
        "outside_box": outside,
        "stderr": errors,
        "infinite": infinite,
        "notes": notes,
    }
