"""Quadrature and Monte Carlo f-divergences against closed forms for Gaussians and independent
numpy integrals (Nowozin et al. 2016; Huszár 2015 for JS_π)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from gandiv.divergences import DIVERGENCES, FDivergence, js_pi
from gandiv.evaluation.quadrature import (
    Grid,
    f_divergence,
    ground_truth,
    integrate,
    make_grid,
    monte_carlo_f_divergence,
)

LOG2 = math.log(2.0)
Case = tuple[MultivariateNormal, MultivariateNormal, Grid]


def f64(x: object) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def mvn(mean: list[float], cov: list[list[float]]) -> MultivariateNormal:
    return MultivariateNormal(f64(mean), covariance_matrix=f64(cov))


# ------------------------------------------------------------------------------ closed forms


def log_affinity(p: MultivariateNormal, q: MultivariateNormal, alpha: float) -> float:
    """log ∫ p^α q^{1−α} for Gaussians (the Rényi/Chernoff integral), written out with numpy:

    (α(α−1)/2) Δᵀ Σ_α⁻¹ Δ − ½ log(det Σ_α / (det Σ_p^{1−α} det Σ_q^α)), Σ_α = α Σ_q + (1−α) Σ_p.
    """
    mp, mq = p.mean.numpy(), q.mean.numpy()
    sp, sq = p.covariance_matrix.numpy(), q.covariance_matrix.numpy()
    s_alpha = alpha * sq + (1 - alpha) * sp
    assert np.all(np.linalg.eigvalsh(s_alpha) > 0), "integral diverges"
    delta = mp - mq
    quad = float(delta @ np.linalg.solve(s_alpha, delta))
    logdet = np.linalg.slogdet(s_alpha)[1] - (1 - alpha) * np.linalg.slogdet(sp)[1]
    logdet -= alpha * np.linalg.slogdet(sq)[1]
    return 0.5 * alpha * (alpha - 1) * quad - 0.5 * logdet


def closed_forms(p: MultivariateNormal, q: MultivariateNormal) -> dict[str, float]:
    kl_pq = float(kl_divergence(p, q))
    kl_qp = float(kl_divergence(q, p))
    out = {
        "kl": kl_pq,
        "reverse_kl": kl_qp,
        "jeffrey": kl_pq + kl_qp,
        # ∫(√p − √q)² = 2 − 2 BC, BC = exp(−Bhattacharyya distance) = ∫ √(pq)
        "squared_hellinger": 2.0 - 2.0 * math.exp(log_affinity(p, q, 0.5)),
    }
    sp, sq = p.covariance_matrix.numpy(), q.covariance_matrix.numpy()
    if np.all(np.linalg.eigvalsh(2 * sq - sp) > 0):  # χ²(P‖Q) = ∫ p²/q − 1 < ∞
        out["pearson"] = math.expm1(log_affinity(p, q, 2.0))
    if np.all(np.linalg.eigvalsh(2 * sp - sq) > 0):  # χ²(Q‖P) = ∫ q²/p − 1 < ∞
        out["neyman"] = math.expm1(log_affinity(q, p, 2.0))
    if np.allclose(sp, sq):  # ½∫|p − q| = 2Φ(δ/2) − 1, δ the Mahalanobis distance
        delta = (p.mean - q.mean).numpy()
        maha = math.sqrt(float(delta @ np.linalg.solve(sp, delta)))
        out["total_variation"] = math.erf(maha / (2 * math.sqrt(2)))
    return out


def numpy_gaussian_density(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = mean.shape[0]
    diff = x - mean
    sol = np.linalg.solve(cov, diff.T).T
    norm = (2 * np.pi) ** (-d / 2) / math.sqrt(np.linalg.det(cov))
    return norm * np.exp(-0.5 * np.sum(diff * sol, axis=-1))


def numpy_integral(
    p: MultivariateNormal,
    q: MultivariateNormal,
    integrand: Callable[[np.ndarray, np.ndarray], np.ndarray],
    half_width: float,
    n: int,
) -> float:
    """∫ integrand(p(x), q(x)) dx by the trapezoid rule with numpy, independent of gandiv's grid
    and rows."""
    mp, mq = p.mean.numpy(), q.mean.numpy()
    sp, sq = p.covariance_matrix.numpy(), q.covariance_matrix.numpy()
    d = mp.shape[0]
    centre = (mp + mq) / 2
    axes = [np.linspace(centre[k] - half_width, centre[k] + half_width, n) for k in range(d)]
    x = np.stack([a.reshape(-1) for a in np.meshgrid(*axes, indexing="ij")], axis=-1)
    dp, dq = numpy_gaussian_density(x, mp, sp), numpy_gaussian_density(x, mq, sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = integrand(dp, dq).reshape((n,) * d)
    for k in reversed(range(d)):
        values = np.trapezoid(values, axes[k], axis=k)
    return float(values)


def numpy_js(p: MultivariateNormal, q: MultivariateNormal, half_width: float, n: int) -> float:
    """JS in nats: ½ p log(p/m) + ½ q log(q/m), m = (p + q)/2."""

    def integrand(dp: np.ndarray, dq: np.ndarray) -> np.ndarray:
        dm = 0.5 * (dp + dq)
        out = 0.5 * np.where(dp > 0, dp * np.log(dp / dm), 0.0)
        return out + 0.5 * np.where(dq > 0, dq * np.log(dq / dm), 0.0)

    return numpy_integral(p, q, integrand, half_width, n)


def numpy_triangular(
    p: MultivariateNormal, q: MultivariateNormal, half_width: float, n: int
) -> float:
    """The triangular discrimination ∫(p − q)²/(p + q)."""

    def integrand(dp: np.ndarray, dq: np.ndarray) -> np.ndarray:
        both = dp + dq
        return np.where(both > 0, (dp - dq) ** 2 / np.where(both > 0, both, 1.0), 0.0)

    return numpy_integral(p, q, integrand, half_width, n)


# ---------------------------------------------------------------------------------- fixtures

CASES_1D = {
    "shift": (mvn([0.0], [[1.0]]), mvn([1.5], [[1.0]])),
    "scale": (mvn([0.0], [[1.0]]), mvn([0.0], [[1.69]])),
    "both": (mvn([-0.5], [[0.64]]), mvn([1.0], [[1.44]])),
    "narrow_model": (mvn([0.3], [[1.0]]), mvn([0.0], [[0.36]])),
    "far": (mvn([0.0], [[1.0]]), mvn([5.0], [[1.0]])),
}
CASES_2D = {
    "shift": (
        mvn([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]),
        mvn([1.0, -0.5], [[1.0, 0.0], [0.0, 1.0]]),
    ),
    "correlated": (
        mvn([0.0, 0.0], [[1.0, 0.6], [0.6, 1.0]]),
        mvn([0.5, 0.5], [[1.0, 0.6], [0.6, 1.0]]),
    ),
    "full": (
        mvn([0.0, 0.2], [[1.0, 0.4], [0.4, 1.0]]),
        mvn([0.8, -0.4], [[1.2, 0.1], [0.1, 0.9]]),
    ),
    "narrow_model": (
        mvn([0.0, 0.0], [[1.0, 0.3], [0.3, 0.8]]),
        mvn([0.5, 0.0], [[0.4, 0.0], [0.0, 0.3]]),
    ),
}


def grid_for(p: MultivariateNormal, q: MultivariateNormal, n: int, half_width: float) -> Grid:
    centre = ((p.mean + q.mean) / 2).tolist()
    return make_grid([c - half_width for c in centre], [c + half_width for c in centre], n)


def log_densities(
    p: MultivariateNormal, q: MultivariateNormal, grid: Grid
) -> tuple[Tensor, Tensor]:
    return p.log_prob(grid.points), q.log_prob(grid.points)


@pytest.fixture(scope="module", params=list(CASES_1D), ids=[f"1d-{k}" for k in CASES_1D])
def case_1d(request: pytest.FixtureRequest) -> Case:
    p, q = CASES_1D[request.param]
    return p, q, grid_for(p, q, 3000, 20.0)


@pytest.fixture(scope="module", params=list(CASES_2D), ids=[f"2d-{k}" for k in CASES_2D])
def case_2d(request: pytest.FixtureRequest) -> Case:
    p, q = CASES_2D[request.param]
    return p, q, grid_for(p, q, 240, 12.0)


# ----------------------------------------------------------------------------------- the grid


def test_make_grid_1d_cell_centres() -> None:
    grid = make_grid(-1.0, 1.0, 4)
    torch.testing.assert_close(grid.points, f64([[-0.75], [-0.25], [0.25], [0.75]]))
    assert grid.cell_volume == pytest.approx(0.5)
    assert grid.shape == (4,)
    assert grid.points.dtype == torch.float64
    torch.testing.assert_close(grid.low, f64([-1.0]))
    torch.testing.assert_close(grid.high, f64([1.0]))


def test_make_grid_2d_is_row_major() -> None:
    grid = make_grid([0.0, -2.0], [1.0, 2.0], 2)
    expected = f64([[0.25, -1.0], [0.25, 1.0], [0.75, -1.0], [0.75, 1.0]])
    torch.testing.assert_close(grid.points, expected)
    assert grid.cell_volume == pytest.approx(0.5 * 2.0)
    assert grid.shape == (2, 2)
    # row-major: reshaping values to grid.shape indexes [i_x, i_y]
    torch.testing.assert_close(grid.points[:, 0].reshape(grid.shape)[:, 0], f64([0.25, 0.75]))


def test_make_grid_3d() -> None:
    grid = make_grid([0.0] * 3, [1.0, 2.0, 3.0], 5)
    assert grid.points.shape == (125, 3)
    assert grid.cell_volume == pytest.approx(0.2 * 0.4 * 0.6)


@pytest.mark.parametrize(
    ("low", "high", "n"),
    [([0.0], [0.0], 3), ([0.0, 1.0], [1.0, 0.5], 3), ([0.0] * 4, [1.0] * 4, 2), (0.0, 1.0, 0)],
)
def test_make_grid_rejects_bad_boxes(low: list[float], high: list[float], n: int) -> None:
    with pytest.raises(ValueError):
        make_grid(low, high, n)


def test_integrate_normalised_densities(case_2d: Case) -> None:
    p, q, grid = case_2d
    for dist in (p, q):
        values = dist.log_prob(grid.points).exp()
        assert float(integrate(values, grid)) == pytest.approx(1.0, abs=1e-10)
        # second moment E[x₀²] = Σ₀₀ + μ₀²
        second = float(integrate(values * grid.points[:, 0] ** 2, grid))
        expected = float(dist.covariance_matrix[0, 0] + dist.mean[0] ** 2)
        assert second == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError):
        integrate(torch.ones(7, dtype=torch.float64), grid)


# ---------------------------------------------------------------------- closed-form Gaussians


def check_closed_forms(p: MultivariateNormal, q: MultivariateNormal, grid: Grid) -> None:
    log_p, log_q = log_densities(p, q, grid)
    for name, expected in closed_forms(p, q).items():
        got = float(f_divergence(DIVERGENCES[name], log_p, log_q, grid))
        # TV's integrand has a kink; the χ² integrands have the widest tails (box truncation)
        tol = {"total_variation": 1e-4, "pearson": 1e-6, "neyman": 1e-6}.get(name, 1e-8)
        assert got == pytest.approx(expected, rel=tol, abs=tol), name


def test_closed_forms_1d(case_1d: Case) -> None:
    check_closed_forms(*case_1d)


def test_closed_forms_2d(case_2d: Case) -> None:
    check_closed_forms(*case_2d)


def test_closed_forms_cover_every_row() -> None:
    seen: set[str] = set()
    for p, q in [*CASES_1D.values(), *CASES_2D.values()]:
        seen |= set(closed_forms(p, q))
    # js and gan (no closed form): a numpy integral below; so for triangular
    assert seen == set(DIVERGENCES) - {"js", "gan", "triangular"}


def test_univariate_closed_form_agrees_with_torch_normal() -> None:
    # the 1-D cases are MultivariateNormal; KL of Normal is an independent formula
    for p, q in CASES_1D.values():
        pn = Normal(p.mean[0], p.covariance_matrix[0, 0].sqrt())
        qn = Normal(q.mean[0], q.covariance_matrix[0, 0].sqrt())
        assert float(kl_divergence(pn, qn)) == pytest.approx(float(kl_divergence(p, q)), rel=1e-12)


def check_js(p: MultivariateNormal, q: MultivariateNormal, grid: Grid, expected: float) -> None:
    log_p, log_q = log_densities(p, q, grid)
    js = float(f_divergence(DIVERGENCES["js"], log_p, log_q, grid))
    assert js == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert 0.0 <= js <= LOG2
    gan = float(f_divergence(DIVERGENCES["gan"], log_p, log_q, grid))
    assert gan == pytest.approx(2 * expected - math.log(4), rel=1e-6, abs=1e-8)
    half = float(f_divergence(js_pi(0.5), log_p, log_q, grid))
    assert half == pytest.approx(js, rel=1e-12, abs=1e-14)


def test_js_against_numpy_integral_1d(case_1d: Case) -> None:
    p, q, grid = case_1d
    check_js(p, q, grid, numpy_js(p, q, half_width=25.0, n=400001))


def test_js_against_numpy_integral_2d(case_2d: Case) -> None:
    p, q, grid = case_2d
    check_js(p, q, grid, numpy_js(p, q, half_width=13.0, n=801))


def check_triangular(
    p: MultivariateNormal, q: MultivariateNormal, grid: Grid, expected: float
) -> None:
    log_p, log_q = log_densities(p, q, grid)
    got = float(f_divergence(DIVERGENCES["triangular"], log_p, log_q, grid))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert 0.0 <= got <= 2.0


def test_triangular_against_numpy_integral_1d(case_1d: Case) -> None:
    p, q, grid = case_1d
    check_triangular(p, q, grid, numpy_triangular(p, q, half_width=25.0, n=400001))


def test_triangular_against_numpy_integral_2d(case_2d: Case) -> None:
    p, q, grid = case_2d
    check_triangular(p, q, grid, numpy_triangular(p, q, half_width=13.0, n=801))


def test_js_saturates_at_log_2_for_disjoint_supports() -> None:
    p, q = mvn([0.0], [[0.01]]), mvn([10.0], [[0.01]])
    grid = grid_for(p, q, 20000, 8.0)
    log_p, log_q = log_densities(p, q, grid)
    assert float(f_divergence(DIVERGENCES["js"], log_p, log_q, grid)) == pytest.approx(LOG2)
    assert float(f_divergence(DIVERGENCES["total_variation"], log_p, log_q, grid)) == pytest.approx(
        1
    )
    assert float(f_divergence(DIVERGENCES["kl"], log_p, log_q, grid)) > 1e3


def test_identical_distributions_give_zero() -> None:
    p, _ = CASES_2D["full"]
    grid = grid_for(p, p, 200, 10.0)
    log_p = p.log_prob(grid.points)
    for row in [*DIVERGENCES.values(), js_pi(0.2)]:
        expected = -math.log(4) if row.name == "gan" else 0.0
        got = float(f_divergence(row, log_p, log_p, grid))
        assert got == pytest.approx(expected, abs=1e-10), row.name


# ---------------------------------------------------------------------------------- JS_π limits


def _chi2(p: MultivariateNormal, q: MultivariateNormal) -> float:
    return math.expm1(log_affinity(p, q, 2.0))


def test_js_pi_tends_to_kl_at_the_ends() -> None:
    # JS_π/π → KL(P‖Q) as π → 0 and JS_π/(1 − π) → KL(Q‖P) as π → 1, with error ≈ (π/2) χ²(P‖Q)
    # (respectively ((1 − π)/2) χ²(Q‖P)) from a second-order expansion of log(1 + π(u − 1))
    p, q = mvn([0.0], [[1.0]]), mvn([0.7], [[1.69]])  # both χ² finite
    grid = grid_for(p, q, 3000, 20.0)
    log_p, log_q = log_densities(p, q, grid)
    kl_pq, kl_qp = float(kl_divergence(p, q)), float(kl_divergence(q, p))
    chi_pq, chi_qp = _chi2(p, q), _chi2(q, p)
    errors_0, errors_1 = [], []
    for eps in (1e-1, 1e-2, 1e-3, 1e-4):
        low = float(f_divergence(js_pi(eps), log_p, log_q, grid)) / eps
        high = float(f_divergence(js_pi(1 - eps), log_p, log_q, grid)) / eps
        errors_0.append(abs(low - kl_pq))
        errors_1.append(abs(high - kl_qp))
        assert errors_0[-1] <= eps * chi_pq
        assert errors_1[-1] <= eps * chi_qp
    assert errors_0 == sorted(errors_0, reverse=True)
    assert errors_1 == sorted(errors_1, reverse=True)
    assert errors_0[-1] < 1e-3 and errors_1[-1] < 1e-3


def test_js_pi_is_between_zero_and_its_bound(case_1d: Case) -> None:
    # 0 ≤ JS_π ≤ −π log π − (1 − π) log(1 − π) (the entropy of the prior)
    p, q, grid = case_1d
    log_p, log_q = log_densities(p, q, grid)
    for pi in (0.1, 0.5, 0.8):
        value = float(f_divergence(js_pi(pi), log_p, log_q, grid))
        assert 0.0 <= value <= -pi * math.log(pi) - (1 - pi) * math.log(1 - pi)


# ------------------------------------------------------------------------- variational bound

ALL_ROWS = [*DIVERGENCES.values(), js_pi(0.2), js_pi(0.7)]
# χ² estimates from samples have (near-)infinite variance for these Gaussians
MC_ROWS = [row for row in ALL_ROWS if row.name not in ("pearson", "neyman")]


@pytest.mark.parametrize("row", ALL_ROWS, ids=[r.name for r in ALL_ROWS])
def test_fenchel_inequality_and_equality_at_the_optimal_critic(row: FDivergence) -> None:
    # Nowozin et al. eq. 4: E_P[T] − E_Q[f*(T)] ≤ D_f(P‖Q), with equality at T* = f'(p/q)
    p, q = mvn([0.0], [[1.0]]), mvn([0.7], [[1.69]])
    grid = grid_for(p, q, 3000, 18.0)
    log_p, log_q = log_densities(p, q, grid)
    dens_p, dens_q = log_p.exp(), log_q.exp()
    div = float(f_divergence(row, log_p, log_q, grid))

    def bound_from_logit(v: Tensor) -> float:
        return float(
            integrate(dens_p * row.activation(v) - dens_q * row.conjugate_activation(v), grid)
        )

    x = grid.points[:, 0]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        c = (torch.rand(4, generator=gen, dtype=torch.float64) - 0.5) * 6
        v = c[0] + c[1] * torch.tanh(x) + c[2] * torch.sin(c[3] * x)
        assert bound_from_logit(v) <= div + 1e-10
    t_star = row.f_prime(torch.exp(log_p - log_q))
    assert bool(torch.isfinite(row.conjugate(t_star)).all())
    tight = float(integrate(dens_p * t_star - dens_q * row.conjugate(t_star), grid))
    assert tight == pytest.approx(div, rel=1e-8, abs=1e-10)
    # a perturbed optimum is strictly worse (except for TV, whose optimum is not unique)
    if row.name != "total_variation":
        nudged = t_star + 0.05 * torch.sin(x)
        nudged_bound = integrate(dens_p * nudged - dens_q * row.conjugate(nudged), grid)
        assert float(nudged_bound) < div - 1e-6


# ---------------------------------------------------------------------- gradients, ground truth


def test_gradient_wrt_float32_log_q_matches_closed_form() -> None:
    # ∂KL(P‖Q)/∂μ_q = Σ_q⁻¹ (μ_q − μ_p)
    p = mvn([0.0, 0.2], [[1.0, 0.5], [0.5, 1.5]])
    cov_q = f64([[1.3, -0.2], [-0.2, 0.9]])
    mean_q = torch.tensor([0.8, -0.4], dtype=torch.float32, requires_grad=True)
    grid = make_grid([-10.0, -10.0], [10.0, 10.0], 200)
    q = MultivariateNormal(mean_q, covariance_matrix=cov_q.float())
    log_q = q.log_prob(grid.points.float())
    assert log_q.dtype == torch.float32 and log_q.requires_grad
    value = f_divergence(DIVERGENCES["kl"], p.log_prob(grid.points), log_q, grid)
    assert value.dtype == torch.float64
    (grad,) = torch.autograd.grad(value, mean_q)
    expected = torch.linalg.solve(cov_q, mean_q.detach().double() - p.mean)
    torch.testing.assert_close(grad.double(), expected, rtol=1e-4, atol=1e-5)


def test_ground_truth_matches_rows() -> None:
    p, q = CASES_2D["full"]
    grid = grid_for(p, q, 240, 12.0)
    log_p, log_q = log_densities(p, q, grid)
    truth = ground_truth(log_p, log_q, grid, pis=(0.1, 0.5, 0.9))
    assert set(truth) == {"kl_pq", "kl_qp", "js", "js_pi_0.1", "js_pi_0.5", "js_pi_0.9"}
    assert all(type(v) is float for v in truth.values())
    assert truth["kl_pq"] == pytest.approx(float(kl_divergence(p, q)), rel=1e-8)
    assert truth["kl_qp"] == pytest.approx(float(kl_divergence(q, p)), rel=1e-8)
    assert truth["js"] == float(f_divergence(DIVERGENCES["js"], log_p, log_q, grid))
    assert truth["js_pi_0.5"] == pytest.approx(truth["js"], rel=1e-12)
    for pi in (0.1, 0.9):
        assert truth[f"js_pi_{pi}"] == float(f_divergence(js_pi(pi), log_p, log_q, grid))


def test_ground_truth_without_pis() -> None:
    p, q = CASES_1D["shift"]
    grid = grid_for(p, q, 2000, 15.0)
    truth = ground_truth(*log_densities(p, q, grid), grid)
    assert set(truth) == {"kl_pq", "kl_qp", "js"}
    assert truth["kl_pq"] == pytest.approx(1.125, rel=1e-9)  # Δμ²/2


# --------------------------------------------------------------------------------- Monte Carlo

MC_P = mvn([0.0, 0.2], [[1.0, 0.5], [0.5, 1.5]])
MC_Q_COV = f64([[1.3, -0.2], [-0.2, 0.9]])
MC_Q_MEAN = [0.8, -0.4]


def mc_terms(row: FDivergence, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """The estimate and the per-sample terms h/m on data and on model samples."""
    gen = torch.Generator().manual_seed(seed)
    q = mvn(MC_Q_MEAN, MC_Q_COV.tolist())
    x = MC_P.mean + torch.randn(n, 2, generator=gen, dtype=torch.float64) @ MC_P.scale_tril.T
    y = q.mean + torch.randn(n, 2, generator=gen, dtype=torch.float64) @ q.scale_tril.T
    estimate = monte_carlo_f_divergence(
        row, MC_P.log_prob(x), q.log_prob(x), MC_P.log_prob(y), q.log_prob(y)
    )
    # the same terms written from the definition q f(p/q) / ((p + q)/2)
    pts = torch.cat([x, y])
    p_val, q_val = MC_P.log_prob(pts).exp(), q.log_prob(pts).exp()
    terms = q_val * row.f(p_val / q_val) / (0.5 * (p_val + q_val))
    return estimate, terms


@pytest.mark.parametrize("row", MC_ROWS, ids=[r.name for r in MC_ROWS])
def test_monte_carlo_agrees_with_quadrature(row: FDivergence) -> None:
    n = 20000
    estimate, terms = mc_terms(row, n, seed=0)
    torch.testing.assert_close(estimate, terms.mean(), rtol=1e-10, atol=1e-12)
    # stratified: half the points from P, half from Q
    std_err = math.sqrt((float(terms[:n].var()) + float(terms[n:].var())) / (4 * n))
    grid = make_grid([-10.0, -10.0], [10.0, 10.0], 200)
    q = mvn(MC_Q_MEAN, MC_Q_COV.tolist())
    exact = float(f_divergence(row, MC_P.log_prob(grid.points), q.log_prob(grid.points), grid))
    assert abs(float(estimate) - exact) < 4 * std_err + 1e-12, (float(estimate), exact, std_err)


def test_monte_carlo_rejects_unequal_sample_sizes() -> None:
    with pytest.raises(ValueError, match="same number"):
        monte_carlo_f_divergence(
            DIVERGENCES["kl"], torch.zeros(3), torch.zeros(3), torch.zeros(4), torch.zeros(4)
        )


def test_monte_carlo_handles_vanishing_densities() -> None:
    # a model sample where both densities underflow contributes 0; far samples give finite terms
    out = monte_carlo_f_divergence(
        DIVERGENCES["js"],
        f64([0.0, -800.0]),
        f64([-900.0, -math.inf]),
        f64([-math.inf, -math.inf]),
        f64([0.0, -math.inf]),
    )
    # terms: 2·(½ log 2) per point where one density dominates, 0 where both vanish
    assert float(out) == pytest.approx(3 * LOG2 / 4)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "js", "squared_hellinger", "gan"])
def test_monte_carlo_gradient_matches_quadrature(name: str) -> None:
    # pathwise gradient w.r.t. the model mean through reparameterised samples y = μ + L ε
    row = DIVERGENCES[name]
    grid = make_grid([-10.0, -10.0], [10.0, 10.0], 200)
    mean = f64(MC_Q_MEAN).requires_grad_(True)
    q = MultivariateNormal(mean, covariance_matrix=MC_Q_COV)
    exact = f_divergence(row, MC_P.log_prob(grid.points), q.log_prob(grid.points), grid)
    (grad_exact,) = torch.autograd.grad(exact, mean)

    gen = torch.Generator().manual_seed(1)
    n = 50000
    x = MC_P.mean + torch.randn(n, 2, generator=gen, dtype=torch.float64) @ MC_P.scale_tril.T
    y = mean + torch.randn(n, 2, generator=gen, dtype=torch.float64) @ q.scale_tril.T
    estimate = monte_carlo_f_divergence(
        row, MC_P.log_prob(x), q.log_prob(x), MC_P.log_prob(y), q.log_prob(y)
    )
    (grad_mc,) = torch.autograd.grad(estimate, mean)
    assert bool((torch.sign(grad_mc) == torch.sign(grad_exact)).all())
    assert float((grad_mc - grad_exact).norm()) < 0.05 * float(grad_exact.norm())
