"""Ground truth for implicit models: divergences from the data to a kernel-density estimate.

A model without a density (an MLP generator) is replaced by the Gaussian KDE of its samples,
q̂(x) = (1/M) Σ_j N(x; s_j, h² I) (Parzen 1962), and the data's divergences to q̂ are integrated
on the quadrature grid of `gandiv.evaluation.ground_truth`. The result is a *labelled estimate*:
q̂ is the model smoothed by N(0, h² I) plus sampling noise, so it differs from the model's own
divergences (for a Gaussian model, E q̂ = the model with h² added to its covariance).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from gandiv.data.toy import ToyData
from gandiv.divergences import FDivergence
from gandiv.evaluation.ground_truth import MAX_POINTS, DataGrid, grid_points, quadrature_box
from gandiv.evaluation.quadrature import Grid, ground_truth

__all__ = ["kde_ground_truth", "kde_log_prob", "kde_log_prob_on_grid", "scott_bandwidth"]

# Most entries of a (points × samples) block at a time (bounds memory, not results).
_CHUNK_ELEMENTS = 1 << 22
# Cells of samples of the separable grid sum: at most 32 per axis, at most 4096 samples each;
# and the log of the smallest normal float64.
_CELLS_PER_AXIS = 32
_CELL_SAMPLES = 4096
_LOG_TINY = math.log(torch.finfo(torch.float64).tiny)
# The box holds every sample's kernel out to this many bandwidths.
_KERNEL_REACH = 8.0


def kde_log_prob(points: Tensor, samples: Tensor, bandwidth: float) -> Tensor:
    """log q̂(x) = logsumexp_j(−‖x − s_j‖² / 2h²) − log M − (d/2) log(2πh²), in float64.

    points: (N, d), samples: (M, d); computed in blocks of points (logsumexp never underflows).
    """
    if points.ndim != 2 or samples.ndim != 2 or points.shape[1] != samples.shape[1]:
        raise ValueError(
            f"need points (N, d) and samples (M, d), got {tuple(points.shape)} and "
            f"{tuple(samples.shape)}"
        )
    if len(samples) == 0 or not bandwidth > 0:
        raise ValueError(f"need M ≥ 1 samples and bandwidth > 0, got {len(samples)}, {bandwidth}")
    s = samples.detach().to(device=points.device, dtype=torch.float64)
    d = s.shape[1]
    log_norm = -math.log(len(s)) - 0.5 * d * math.log(2 * math.pi * bandwidth**2)
    rows = max(1, _CHUNK_ELEMENTS // len(s))
    parts = [
        torch.logsumexp(-torch.cdist(block, s).square() / (2 * bandwidth**2), dim=1)
        for block in points.detach().to(torch.float64).split(rows)
    ]
    out = torch.cat(parts) if parts else s.new_empty(0)
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


def scott_bandwidth(samples: Tensor) -> float:
    """Scott's rule (Scott 1992, eq. 6.42) h = n^(−1/(d+4)) · σ̄, σ̄ the mean over dimensions of the
    samples' standard deviations (an isotropic kernel)."""
    if samples.ndim != 2 or len(samples) < 2:
        raise ValueError(f"need samples of shape (n, d) with n ≥ 2, got {tuple(samples.shape)}")
    n, d = samples.shape
    sigma = float(samples.detach().to(torch.float64).std(dim=0).mean())
    return sigma * n ** (-1.0 / (d + 4))


def kde_ground_truth(
    data: ToyData,
    samples: Tensor,
    points: int | None = None,
    pis: Sequence[float] = (),
    bandwidth: float | None = None,
    extra: Mapping[str, FDivergence] | None = None,
) -> dict[str, float | str]:
    """KL(P‖Q̂) as ``kl_pq``, KL(Q̂‖P) as ``kl_qp``, ``js`` and ``js_pi_<π>`` (nats) between the data
    P and the Gaussian KDE Q̂ of `samples`, by quadrature (1-D/2-D only).

    `bandwidth` h defaults to Scott's rule capped at the data's smallest length scale: Scott's
    rule alone suits unimodal samples and over-smooths multimodal ones (ring8: h ≈ 0.2 against
    component stds of 0.014). Samples that all coincide (Scott's h = 0) get the finest kernel the
    largest grid integrates: h = the grid spacing.

    The box is the data's quadrature box widened to hold every kernel out to 8 h; the grid has
    `points` per dimension, by default the data grid's spacing refined to ≤ h/1.5 (within the
    data grid's limits). Labelled ``method = "kde"`` with its ``bandwidth`` and ``n_samples``.
    """
    if data.dim > 2:
        raise ValueError(
            f"kde_ground_truth integrates on a grid: data of dimension 1 or 2 only, got {data.dim}"
        )
    if samples.ndim != 2 or samples.shape[1] != data.dim:
        raise ValueError(
            f"samples must have shape (n, {data.dim}), got shape {tuple(samples.shape)}"
        )
    samples = samples.detach().to(torch.float64).cpu()
    samples = samples[torch.isfinite(samples).all(dim=1)]
    if bandwidth is None:
        bandwidth = min(scott_bandwidth(samples), data.length_scale())
        if bandwidth == 0.0:  # every sample the same point (a collapsed generator)
            low, high = quadrature_box(data, samples)
            bandwidth = float((high - low).max()) / MAX_POINTS[data.dim]
    elif not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    reach = _KERNEL_REACH * bandwidth
    corners = torch.stack([samples.min(dim=0).values - reach, samples.max(dim=0).values + reach])
    low, high = quadrature_box(data, corners)
    if points is None:
        span = float((high - low).max())
        wanted = max(grid_points(data, low, high, None), math.ceil(1.5 * span / bandwidth))
        points = min(wanted, MAX_POINTS[data.dim])
    held = DataGrid(data, low, high, points)
    log_q = kde_log_prob_on_grid(held.grid, samples, bandwidth)
    metrics = ground_truth(held.log_p.to(torch.float64), log_q, held.grid, pis, extra)
    return {"method": "kde", "bandwidth": bandwidth, "n_samples": len(samples), **metrics}
