"""The in-training ground truth (`ground_truth_metrics`): its cached grids, the data's density on
them summed tile by tile over the atoms that matter, and the model's density in chunks, against
a direct quadrature written here with numpy (every atom, every grid point, closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from gandiv.data.manifold import Circle
from gandiv.data.spread import SpreadKernel, atoms_log_prob, atoms_log_prob_grid
from gandiv.data.toy import Mixture, SwissRoll
from gandiv.evaluation.ground_truth import (
    DataGrid,
    covering_box,
    doubled_box,
    ground_truth_metrics,
)
from gandiv.evaluation.quadrature import make_grid
from gandiv.models.flow import CouplingFlow
from gandiv.models.gaussian import GaussianModel


def swiss_roll_log_p(x: np.ndarray, noise: float = 0.25, scale: float = 7.5) -> np.ndarray:
    """log p of the Swiss roll: its 4096-node composite Gauss–Legendre rule over u, every node,
    exact offsets (no expansion of ‖x − c‖²)."""
    nodes, weights = np.polynomial.legendre.leggauss(8)
    panels = 4096 // 8
    left = np.arange(panels)[:, None] / panels
    u = (left + 0.5 * (nodes + 1) / panels).reshape(-1)
    w = np.tile(0.5 * weights / panels, panels)
    t = 1.5 * np.pi * (1 + 2 * u)
    centres = np.stack([t * np.cos(t), t * np.sin(t)], -1) / scale
    var = (noise / scale) ** 2
    out = []
    for block in np.array_split(x, max(1, len(x) // 512)):
        sq = ((block[:, None, :] - centres[None]) ** 2).sum(-1)
        out.append(logsumexp(np.log(w) - sq / (2 * var), axis=1) - np.log(2 * np.pi * var))
    return np.concatenate(out)


def gaussian_log_density(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    diff = x - mean
    solved = np.linalg.solve(cov, diff.T).T
    _, log_det = np.linalg.slogdet(cov)
    return -0.5 * (diff * solved).sum(1) - 0.5 * log_det - np.log(2 * np.pi)


def mixture_log_p(x: np.ndarray, data: Mixture) -> np.ndarray:
    parts = [
        math.log(float(w)) + gaussian_log_density(x, m.numpy(), c.numpy())
        for w, m, c in zip(data.weights, data.means, data.covs, strict=True)
    ]
    return logsumexp(np.stack(parts), axis=0)


def direct_quadrature(log_p: np.ndarray, log_q: np.ndarray, cell: float) -> dict[str, float]:
    """KL(P‖Q), KL(Q‖P) and JS by the midpoint rule, written out."""
    p, q = np.exp(log_p), np.exp(log_q)
    log_m = np.logaddexp(log_p, log_q) - np.log(2)
    return {
        "kl_pq": float((p * (log_p - log_q)).sum() * cell),
        "kl_qp": float((q * (log_q - log_p)).sum() * cell),
        "js": float((0.5 * p * (log_p - log_m) + 0.5 * q * (log_q - log_m)).sum() * cell),
    }


@pytest.mark.parametrize("k", [0, 2])
def test_swiss_roll_density_on_its_grid_matches_every_node_summed(k: int) -> None:
    data = SwissRoll()
    low, high = doubled_box(data, k)
    held = DataGrid(data, low, high, None)
    pick = torch.randperm(len(held.grid.points), generator=torch.Generator().manual_seed(k))
    points = held.grid.points[pick[:3000]].numpy()
    expected = swiss_roll_log_p(points)
    got = held.log_p[pick[:3000]].numpy()
    assert expected.min() < -1000  # the grid reaches far from the roll, where log p is tiny
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", ["swiss_roll", "mixture"])
def test_cached_ground_truth_matches_a_direct_quadrature(name: str) -> None:
    covs = [[[0.16, 0.05], [0.05, 0.2]], [[2.25, 0.0], [0.0, 1.0]]]
    data = SwissRoll() if name == "swiss_roll" else Mixture([0.3, 0.7], [[-3, -1], [1, 0]], covs)
    points = 96 if name == "swiss_roll" else None  # (numpy's direct sum over 4096 nodes)
    model = GaussianModel(2)
    with torch.no_grad():
        model.assign(torch.tensor([0.3, -0.2]), torch.tensor([[0.8, 0.3], [0.3, 0.5]]))
    cache: dict = {}
    first = ground_truth_metrics(data, model, torch.Generator().manual_seed(0), points, cache=cache)
    again = ground_truth_metrics(data, model, torch.Generator().manual_seed(0), points, cache=cache)
    assert again == first and len(cache) == 1  # the second call reads the cached grid

    samples = model.sample(20_000, torch.Generator().manual_seed(0))
    _, low, high = covering_box(data, samples)
    n = points or next(iter(cache.values())).grid.shape[0]
    grid = make_grid(low, high, n)  # (the cell centres; the sums below are numpy's)
    x = grid.points.numpy()
    log_p = swiss_roll_log_p(x) if name == "swiss_roll" else mixture_log_p(x, data)
    mean, cov = model.mean.detach().double().numpy(), model.covariance.detach().double().numpy()
    log_q = gaussian_log_density(x, mean, cov)
    assert abs(np.exp(log_q).sum() * grid.cell_volume - 1) < 1e-3  # (quadrature, not Monte Carlo)
    expected = direct_quadrature(log_p, log_q, grid.cell_volume)
    for key, value in expected.items():
        assert first[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_a_flows_density_on_a_grid_in_chunks_is_its_density_in_one_pass() -> None:
    torch.manual_seed(0)
    flow = CouplingFlow(2)
    grid = make_grid([-3.0, -3.0], [3.0, 3.0], 120)  # 14,400 points: several chunks
    axes = tuple(a.float() for a in grid.axes)
    points = grid.points.float()
    with torch.no_grad():
        assert torch.equal(flow.log_prob_grid(axes, points), flow.log_prob(points))


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_atoms_summed_tile_by_tile_equal_every_atom_summed(kind: str) -> None:
    circle = Circle([0.5, -0.2], 1.3)
    u, w = torch.linspace(0, 1, 801, dtype=torch.float64)[:-1], torch.full((800,), 1 / 800)
    centres, log_w = circle.curve(u), w.double().log()
    kernel = SpreadKernel(kind, 0.05)
    grid = make_grid([-4.0, -3.0], [5.0, 2.5], 101)  # (not a multiple of the tile)
    fast = atoms_log_prob_grid(grid.axes, grid.points, centres, log_w, kernel, width=0.02)
    full = atoms_log_prob(grid.points, centres, log_w, kernel, width=0.02)
    assert float(full.min()) < (-1000 if kind == "gaussian" else -100)  # far tails included
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-10)
