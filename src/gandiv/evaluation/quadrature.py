"""Exact f-divergences between known densities: midpoint quadrature on a 1-D/2-D grid, and an
unbiased Monte Carlo estimate from samples of both distributions otherwise.

D_f(P‖Q) = ∫ q f(p/q) dx (Nowozin, Cseke & Tomioka 2016, eq. 2) is integrated through each row's
``perspective`` so that tails with p or q underflowing contribute their correct limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gandiv.divergences import DIVERGENCES, FDivergence, js_pi

__all__ = [
    "Grid",
    "f_divergence",
    "ground_truth",
    "integrate",
    "make_grid",
    "monte_carlo_f_divergence",
]


@dataclass(frozen=True)
class Grid:
    """Cell centres of a regular grid (midpoint rule), row-major over ``shape``."""

    points: Tensor  # (N, d) float64
    cell_volume: float
    shape: tuple[int, ...]
    low: Tensor  # (d,) float64
    high: Tensor  # (d,) float64

    @property
    def axes(self) -> tuple[Tensor, ...]:
        """The cell centres along each axis: `points` is their product (meshgrid "ij")."""
        return _axes(self.low, self.high, self.shape[0])


def _axes(lo: Tensor, hi: Tensor, n_per_dim: int) -> tuple[Tensor, ...]:
    width = (hi - lo) / n_per_dim
    index = torch.arange(n_per_dim, dtype=torch.float64, device=lo.device) + 0.5
    return tuple(lo[k] + index * width[k] for k in range(lo.numel()))


def make_grid(
    low: float | Sequence[float] | Tensor,
    high: float | Sequence[float] | Tensor,
    n_per_dim: int,
    device: torch.device | str | None = None,
) -> Grid:
    """A box [low, high] cut into ``n_per_dim`` cells per axis, d = 1, 2 or 3.

    The midpoint rule is spectrally accurate for smooth densities that vanish at the box edges.
    d = 3 is allowed but costs n_per_dim³ evaluations (e.g. 200³ = 8·10⁶ points).
    """
    lo = torch.as_tensor(low, dtype=torch.float64, device=device).reshape(-1)
    hi = torch.as_tensor(high, dtype=torch.float64, device=device).reshape(-1)
    if lo.shape != hi.shape or not 1 <= lo.numel() <= 3:
        raise ValueError(
            f"low and high must have the same dimension d in {{1, 2, 3}}, "
            f"got {tuple(lo.shape)} and {tuple(hi.shape)}"
        )
    if not bool((hi > lo).all()):
        raise ValueError(
            f"need high > low in every dimension, got low={lo.tolist()}, high={hi.tolist()}"
        )
    if isinstance(n_per_dim, bool) or not isinstance(n_per_dim, int) or n_per_dim < 1:
        raise ValueError(f"n_per_dim must be a positive integer, got {n_per_dim!r}")
    width = (hi - lo) / n_per_dim
    mesh = torch.meshgrid(*_axes(lo, hi, n_per_dim), indexing="ij")
    points = torch.stack([m.reshape(-1) for m in mesh], dim=-1)
    return Grid(
        points=points,
        cell_volume=float(torch.prod(width)),
        shape=(n_per_dim,) * lo.numel(),
        low=lo,
        high=hi,
    )


def integrate(values: Tensor, grid: Grid) -> Tensor:
    """Midpoint rule Σ values · cell volume over the last dimension (of size N = grid points)."""
    n = grid.points.shape[0]
    if values.shape[-1:] != (n,):
        raise ValueError(f"values must end in the grid size {n}, got shape {tuple(values.shape)}")
    return values.sum(dim=-1) * grid.cell_volume


def f_divergence(div: FDivergence, log_p: Tensor, log_q: Tensor, grid: Grid) -> Tensor:
    """D_f(P‖Q) = ∫ q f(p/q) dx on the grid, from log-densities at ``grid.points``.

    Computed in float64 (differentiable w.r.t. either input, whatever its dtype); returns a float64
    scalar.
    """
    a = log_p.to(torch.float64)
    b = log_q.to(torch.float64)
    return integrate(div.perspective(a, b), grid)


def ground_truth_rows(
    pis: Sequence[float] = (), extra: Mapping[str, FDivergence] | None = None
) -> dict[str, FDivergence]:
    """The rows of the ground-truth metrics, by metric name.

    ``kl_pq`` = KL(P‖Q), ``kl_qp`` = KL(Q‖P), ``js``, ``js_pi(pi).name`` (``f"js_pi_{pi:g}"``) for
    each π, and any `extra` rows under their given names.
    """
    rows = {"kl_pq": DIVERGENCES["kl"], "kl_qp": DIVERGENCES["reverse_kl"], "js": DIVERGENCES["js"]}
    for pi in pis:
        row = js_pi(pi)
        rows[row.name] = row
    return {**rows, **(extra or {})}


def ground_truth(
    log_p: Tensor,
    log_q: Tensor,
    grid: Grid,
    pis: Sequence[float] = (),
    extra: Mapping[str, FDivergence] | None = None,
) -> dict[str, float]:
    """KL(P‖Q), KL(Q‖P), JS, JS_π (Huszár 2015) and `extra` rows by quadrature, as plain floats
    (keys as in `ground_truth_rows`)."""
    rows = ground_truth_rows(pis, extra)
    a, b = log_p.to(torch.float64), log_q.to(torch.float64)
    values: dict[int, float] = {}  # by row: a row named twice (kl_pq, the objective's) is one sum
    with torch.no_grad():
        for row in rows.values():
            if id(row) not in values:
                values[id(row)] = float(f_divergence(row, a, b, grid))
    return {key: values[id(row)] for key, row in rows.items()}


def monte_carlo_f_divergence(
    div: FDivergence,
    log_p_at_data: Tensor,
    log_q_at_data: Tensor,
    log_p_at_model: Tensor,
    log_q_at_model: Tensor,
) -> Tensor:
    """Unbiased estimate of ∫ q f(p/q) by importance sampling from m = (p + q)/2.

    n samples from P and n from Q are together a (stratified) sample of m; the estimate is the mean
    over all 2n points of q f(p/q) / m. Because q f(p/q) is 1-homogeneous in (p, q), each term is
    2·perspective(log p − ℓ, log q − ℓ) with ℓ = log(p + q), which never overflows. Differentiable:
    pass log-densities at reparameterised model samples for pathwise gradients.
    """
    n_data, n_model = log_p_at_data.shape[0], log_p_at_model.shape[0]
    if n_data != n_model or log_q_at_data.shape[0] != n_data or log_q_at_model.shape[0] != n_model:
        raise ValueError(
            "need the same number n of data and model samples (the proposal is (p + q)/2), got "
            f"{n_data} data and {n_model} model samples"
        )
    log_p = torch.cat([log_p_at_data, log_p_at_model])
    log_q = torch.cat([log_q_at_data, log_q_at_model])
    log_sum = torch.logaddexp(log_p, log_q)
    # a point where both densities vanish contributes 0 (perspective of −inf, −inf)
    log_sum = torch.where(log_sum == -math.inf, torch.zeros_like(log_sum), log_sum)
    return 2.0 * div.perspective(log_p - log_sum, log_q - log_sum).mean()
