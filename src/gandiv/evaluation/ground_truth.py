"""Ground-truth divergences between the data P and a model Q that both have densities.

In 1-D and 2-D the divergences are integrated on a grid (midpoint rule) over a box holding the
mass of both P and Q; in higher dimensions they are Monte Carlo estimates. The box is the data's
own box widened to hold the model's samples, and the grid spacing follows the data's smallest
length scale (a component's standard deviation), which keeps the midpoint rule's error far below
the metrics' printed precision for the smooth integrands involved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from gandiv.data.toy import ToyData
from gandiv.divergences import FDivergence
from gandiv.evaluation.quadrature import (
    Grid,
    ground_truth,
    ground_truth_rows,
    integrate,
    make_grid,
    monte_carlo_f_divergence,
)
from gandiv.models.base import GenerativeModel

# Largest grid per dimension: 4096 points on a line, 512² on a plane.
MAX_POINTS = {1: 4096, 2: 512}
MIN_POINTS = {1: 512, 2: 128}
# At most this many doublings of the data's box (2^20 times its size: beyond, the grid is useless).
MAX_DOUBLINGS = 20
# The model's density must integrate to 1 within this over the grid for quadrature to be trusted.
MASS_TOLERANCE = 1e-3


def quadrature_box(data: ToyData, model_samples: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The data's box with half its span added on each side, widened to hold `model_samples`.

    The data's own box holds all but 1e-7 of P's mass; the extra span holds the tails where one
    density is far below the other, which the χ²-type integrands (q²/p for Neyman) weigh heavily.
    """
    bounds = data.bounds().to(torch.float64).cpu()
    span = bounds[:, 1] - bounds[:, 0]
    low, high = bounds[:, 0] - 0.5 * span, bounds[:, 1] + 0.5 * span
    if model_samples is not None:
        samples = model_samples.detach().to(torch.float64).cpu()
        samples = samples[torch.isfinite(samples).all(dim=1)]
        if len(samples) > 0:
            s_low, s_high = samples.min(dim=0).values, samples.max(dim=0).values
            margin = 0.25 * (s_high - s_low)
            low = torch.minimum(low, s_low - margin)
            high = torch.maximum(high, s_high + margin)
    return low, high


def grid_points(data: ToyData, low: Tensor, high: Tensor, override: int | None) -> int:
    """Points per dimension: spacing of about 2/3 of the data's length scale, within limits."""
    if override is not None:
        return override
    dim = data.dim
    span = float((high - low).max())
    wanted = math.ceil(1.5 * span / data.length_scale())
    return int(min(max(wanted, MIN_POINTS[dim]), MAX_POINTS[dim]))


class DataGrid:
    """A quadrature grid over a box together with log p on it (computed once per box).

    `points` holds the grid points in the default dtype, ready for a model's log_prob, and `axes`
    the axes they are the product of, in the same dtype (for `log_prob_grid`).
    """

    def __init__(self, data: ToyData, low: Tensor, high: Tensor, points: int | None) -> None:
        n = grid_points(data, low, high, points)
        self.low, self.high = low, high
        self.grid: Grid = make_grid(low, high, n)
        self.log_p = data.log_prob_grid(self.grid.axes, self.grid.points).detach()
        self.points = self.grid.points.to(torch.get_default_dtype())
        self.axes = tuple(a.to(self.points.dtype) for a in self.grid.axes)

    def to(self, device: torch.device) -> DataGrid:
        self.grid = make_grid(self.low, self.high, self.grid.shape[0], device=device)
        self.log_p = self.log_p.to(device)
        self.points = self.points.to(device)
        self.axes = tuple(a.to(device) for a in self.axes)
        return self


def doubled_box(data: ToyData, k: int) -> tuple[Tensor, Tensor]:
    """The data's quadrature box doubled about its centre k times."""
    low, high = quadrature_box(data)
    centre, half = (low + high) / 2, (high - low) / 2 * 2**k
    return centre - half, centre + half


def covering_box(data: ToyData, model_samples: Tensor) -> tuple[int, Tensor, Tensor]:
    """The smallest `doubled_box` (k, low, high) holding the samples (with a margin).

    The box depends only on the data and the current samples (not on earlier evaluations), so
    metrics are reproducible whatever the evaluation cadence or a resume.
    """
    s_low, s_high = quadrature_box(data, model_samples)
    k = 0
    low, high = doubled_box(data, k)
    while k < MAX_DOUBLINGS and ((low > s_low).any() or (high < s_high).any()):
        k += 1
        low, high = doubled_box(data, k)
    return k, low, high


def ground_truth_metrics(
    data: ToyData,
    model: GenerativeModel,
    generator: torch.Generator,
    points: int | None = None,
    pis: Sequence[float] = (),
    extra: Mapping[str, FDivergence] | None = None,
    n_samples: int = 20_000,
    cache: dict[tuple[int, str], DataGrid] | None = None,
) -> dict[str, float]:
    """KL(P‖Q) as ``kl_pq``, KL(Q‖P) as ``kl_qp``, the JSD as ``js`` (nats), ``js_pi_<π>`` and
    any `extra` rows under their names.

    Exact by quadrature in 1-D/2-D, Monte Carlo with `n_samples` draws from each otherwise — and
    also in 1-D/2-D when the grid cannot resolve the model (its density does not integrate to 1
    over the grid: a model far wider or narrower than the data). `cache` (optional) keeps the
    data's grids between calls so log p is evaluated once per box.
    """
    with torch.no_grad():
        model_samples = model.sample(n_samples, generator)
        if data.dim <= 2:
            k, low, high = covering_box(data, model_samples)
            key = (k, str(model_samples.device))
            held = cache.get(key) if cache is not None else None
            if held is None:
                held = DataGrid(data, low, high, points).to(model_samples.device)
                if cache is not None:
                    cache[key] = held
            log_q = model.log_prob_grid(held.axes, held.points).to(torch.float64)
            mass = float(integrate(log_q.exp(), held.grid))
            if abs(mass - 1.0) < MASS_TOLERANCE:
                return ground_truth(held.log_p, log_q, held.grid, pis, extra)
        data_samples = data.sample(n_samples, generator).to(model_samples)
        lp_data, lq_data = data.log_prob(data_samples), model.log_prob(data_samples)
        lp_model, lq_model = data.log_prob(model_samples), model.log_prob(model_samples)
        return {
            key: float(monte_carlo_f_divergence(row, lp_data, lq_data, lp_model, lq_model))
            for key, row in ground_truth_rows(pis, extra).items()
        }
