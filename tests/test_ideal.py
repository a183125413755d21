"""The ideal fit against independent computation.

Every divergence is rewritten here in numpy from its textbook formula, integrated on fine fixed
grids with the trapezoid rule, and minimised over Gaussians by a brute-force grid search of (μ, σ)
in 1-D and by scipy's Nelder–Mead from many random starts in 2-D: no code of
`gandiv.evaluation.ideal` is used to find the reference optima.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from gandiv.data.toy import Mixture
from gandiv.divergences import DIVERGENCES, get_divergence
from gandiv.evaluation.ideal import (
    GaussianFit,
    IdealSearch,
    Landscape,
    compare,
    gaussian_w2,
    nearest_divergence,
)

from .conftest import TINY

ROWS = [
    *(n for n in DIVERGENCES),
    "js_pi_0.1",
    "js_pi_0.5",
    "js_pi_0.9",
]


def row_of(name: str):
    if name.startswith("js_pi_"):
        return get_divergence("js_pi", float(name.removeprefix("js_pi_")))
    return get_divergence(name)


# ------------------------------------------------------------------------------------------------
# the integrands q f(p/q), written from the definitions (p, q densities; lp, lq their logs)
def integrand(name: str, lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p, q = np.exp(lp), np.exp(lq)
        if name == "kl":
            return p * (lp - lq)
        if name == "reverse_kl":
            return q * (lq - lp)
        if name == "pearson":
            return q * np.expm1(lp - lq) ** 2
        if name == "neyman":
            return p * np.expm1(lq - lp) ** 2
        if name == "squared_hellinger":
            return (np.sqrt(p) - np.sqrt(q)) ** 2
        if name == "jeffrey":
            return (p - q) * (lp - lq)
        if name == "total_variation":
            return 0.5 * np.abs(p - q)
        if name == "triangular":
            return np.where(p + q > 0, (p - q) ** 2 / np.where(p + q > 0, p + q, 1.0), 0.0)
        pi = {"js": 0.5, "gan": 0.5}.get(name) or float(name.removeprefix("js_pi_"))
        lm = np.logaddexp(np.log(pi) + lp, np.log1p(-pi) + lq)
        value = pi * p * (lp - lm) + (1 - pi) * q * (lq - lm)
        # the gan row: p log(p/(p + q)) + q log(q/(p + q)) = 2·(JS integrand) − log 2·(p + q)
        return 2 * value - math.log(2) * (p + q) if name == "gan" else value


def mixture_log_density(weights, means, covs, x: np.ndarray) -> np.ndarray:
    """log Σ w_k N(x; m_k, C_k) for x (n, d)."""
    parts = []
    for w, m, c in zip(weights, means, covs, strict=True):
        c = np.atleast_2d(c)
        diff = x - np.asarray(m, dtype=float)
        solved = np.linalg.solve(c, diff.T).T
        log_det = np.linalg.slogdet(c)[1]
        d = x.shape[1]
        parts.append(
            math.log(w)
            - 0.5 * (diff * solved).sum(1)
            - 0.5 * log_det
            - 0.5 * d * math.log(2 * math.pi)
        )
    return logsumexp(np.stack(parts), axis=0)


# ------------------------------------------------------------------------------------------------
# 1-D: brute-force grid search of (μ, σ), local minima refined by Nelder–Mead
def reference_optima_1d(name: str, weights, means, stds) -> list[tuple[float, float, float]]:
    """Every local optimum (value, μ, σ) of the divergence over 1-D Gaussians, lowest first."""
    lo, hi = min(means) - 10 * max(stds), max(means) + 10 * max(stds)
    x = np.linspace(lo - 20, hi + 20, 24_001)
    lp = mixture_log_density(weights, [[m] for m in means], [[[s * s]] for s in stds], x[:, None])
    spread = math.sqrt(
        sum(w * (s * s + m * m) for w, m, s in zip(weights, means, stds, strict=True))
        - sum(w * m for w, m in zip(weights, means, strict=True)) ** 2
    )
    mus = np.linspace(min(means) - 1.0, max(means) + 1.0, 121)
    sigmas = np.exp(np.linspace(math.log(0.25 * min(stds)), math.log(2.5 * spread), 70))

    def value(mu: float, sigma: float) -> float:
        lq = -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
        out = float(np.trapezoid(integrand(name, lp, lq), x))
        return out if math.isfinite(out) else math.inf

    table = np.array([[value(m, s) for s in sigmas] for m in mus])
    found: list[tuple[float, float, float]] = []
    top = np.nanmax(table[np.isfinite(table)])
    for i in range(1, len(mus) - 1):
        for j in range(1, len(sigmas) - 1):
            centre = table[i, j]
            around = table[i - 1 : i + 2, j - 1 : j + 2].copy()
            around[1, 1] = np.inf
            if not math.isfinite(centre) or centre >= top - 1e-9 or not (centre < around).all():
                continue
            result = minimize(
                lambda t: value(t[0], math.exp(t[1])),
                [mus[i], math.log(sigmas[j])],
                method="Nelder-Mead",
                options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 4000},
            )
            mu, sigma = float(result.x[0]), math.exp(float(result.x[1]))
            if not any(abs(mu - m) < 0.02 and abs(sigma - s) < 0.02 for _, m, s in found):
                found.append((float(result.fun), mu, sigma))
    return sorted(found)


MIXTURES_1D = {
    "overlapping": ([0.3, 0.7], [-1.0, 1.5], [0.5, 0.7]),
    "separated": ([0.25, 0.75], [-3.0, 2.0], [0.6, 1.0]),
    "three": ([0.2, 0.5, 0.3], [-4.0, 0.0, 3.0], [0.5, 1.0, 0.4]),
}


def check_1d(mixture: str, name: str) -> None:
    weights, means, stds = MIXTURES_1D[mixture]
    data = Mixture.isotropic(weights, [[m] for m in means], stds)
    search = IdealSearch(Landscape(data), row_of(name)).run()
    reference = reference_optima_1d(name, weights, means, stds)
    assert reference, "the independent search found no optimum"
    mine = [(o.value, float(o.fit.mean[0]), float(o.fit.cov[0, 0].sqrt())) for o in search.optima]
    # the global optimum
    _, mu, sigma = reference[0]
    assert abs(mine[0][1] - mu) < 0.01 and abs(mine[0][2] - sigma) < 0.01, (mine, reference)
    # every local optimum the independent search finds is among gandiv's
    for value, mu, sigma in reference:
        assert any(abs(m - mu) < 0.01 and abs(s - sigma) < 0.01 for _, m, s in mine), (
            f"{name} on {mixture}: the optimum ({mu:.4f}, {sigma:.4f}) = {value:.6f} is missing "
            f"from {mine}"
        )
        match = min(mine, key=lambda o: abs(o[1] - mu) + abs(o[2] - sigma))
        assert match[0] == pytest.approx(value, rel=2e-3, abs=1e-4)


@pytest.mark.parametrize("name", ["reverse_kl", "neyman", "total_variation", "js_pi_0.9"])
def test_ideal_1d_against_grid_search(name: str) -> None:
    check_1d("separated", name)


@pytest.mark.slow
@pytest.mark.parametrize("mixture", list(MIXTURES_1D))
@pytest.mark.parametrize("name", ROWS)
def test_ideal_1d_every_row(mixture: str, name: str) -> None:
    check_1d(mixture, name)


# ------------------------------------------------------------------------------------------------
# 2-D: Nelder–Mead from many random starts on a fine fixed grid
MIXTURES_2D = {
    "separated": (
        [0.35, 0.65],
        [[-2.0, -1.0], [1.5, 1.0]],
        [np.eye(2) * 0.25, np.eye(2) * 0.64],
    ),
    "overlapping": (
        [0.6, 0.4],
        [[0.0, 0.0], [1.5, 0.5]],
        [np.array([[1.0, 0.5], [0.5, 0.8]]), np.array([[0.3, -0.1], [-0.1, 0.4]])],
    ),
}


def _cov(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    chol = np.array([[math.exp(t[2]), 0.0], [t[4], math.exp(t[3])]])
    return np.asarray(t[:2]), chol @ chol.T


def reference_optima_2d(name: str, weights, means, covs, starts: int = 14):
    spread = max(float(np.sqrt(np.linalg.eigvalsh(c)[-1])) for c in covs)
    lo = np.min(means, axis=0) - 7 * spread
    hi = np.max(means, axis=0) + 7 * spread
    n = 320 if name == "total_variation" else 220
    axes = [np.linspace(lo[k] - 3, hi[k] + 3, n) for k in range(2)]
    gx, gy = np.meshgrid(*axes, indexing="ij")
    x = np.stack([gx.ravel(), gy.ravel()], 1)
    lp = mixture_log_density(weights, means, covs, x)

    def value(t: np.ndarray) -> float:
        mean, cov = _cov(t)
        lq = mixture_log_density([1.0], [mean], [cov], x)
        out = float(
            np.trapezoid(np.trapezoid(integrand(name, lp, lq).reshape(n, n), axes[1]), axes[0])
        )
        return out if math.isfinite(out) else 1e300

    rng = np.random.default_rng(0)
    smallest = min(float(np.sqrt(np.linalg.eigvalsh(c)[0])) for c in covs)
    found = []
    for _ in range(starts):
        t0 = np.concatenate(
            [
                rng.uniform(np.min(means, 0) - 0.5, np.max(means, 0) + 0.5),
                rng.uniform(math.log(0.7 * smallest), math.log(1.5 * spread + 1.0), 2),
                rng.uniform(-0.5, 0.5, 1),
            ]
        )
        if value(t0) >= 1e300:
            continue
        result = minimize(
            value, t0, method="Nelder-Mead",
            options={"xatol": 1e-6, "fatol": 1e-12, "maxiter": 6000, "adaptive": True},
        )  # fmt: skip
        mean, cov = _cov(result.x)
        fit = GaussianFit.of(mean, cov)
        if not any(gaussian_w2(fit, f) < 0.02 for _, f in found):
            found.append((float(result.fun), fit))
    return sorted(found, key=lambda pair: pair[0])


def check_2d(mixture: str, name: str) -> None:
    weights, means, covs = MIXTURES_2D[mixture]
    data = Mixture(weights, means, np.stack(covs))
    search = IdealSearch(Landscape(data), row_of(name)).run()
    reference = reference_optima_2d(name, weights, means, covs)
    assert reference

    def close(a: GaussianFit, b: GaussianFit) -> bool:
        return bool((a.mean - b.mean).abs().max() < 0.01 and (a.cov - b.cov).abs().max() < 0.01)

    assert close(search.ideal.fit, reference[0][1]), (search.ideal.as_dict(), reference[0])
    for value, fit in reference:
        assert any(close(o.fit, fit) for o in search.optima), (
            f"{name} on {mixture}: the optimum {fit.as_dict()} = {value:.6f} is missing"
        )


@pytest.mark.slow
@pytest.mark.parametrize("mixture", list(MIXTURES_2D))
@pytest.mark.parametrize("name", ROWS)
def test_ideal_2d_every_row(mixture: str, name: str) -> None:
    check_2d(mixture, name)


# ------------------------------------------------------------------------------------------------
# closed forms
def test_forward_kl_ideal_is_the_moment_match() -> None:
    weights, means, covs = MIXTURES_2D["overlapping"]
    data = Mixture(weights, means, np.stack(covs))
    search = IdealSearch(Landscape(data), DIVERGENCES["kl"]).run()
    w = np.asarray(weights)
    m = np.asarray(means)
    mean = w @ m
    cov = sum(
        wk * (ck + np.outer(mk - mean, mk - mean)) for wk, mk, ck in zip(w, m, covs, strict=True)
    )
    assert np.allclose(search.ideal.fit.mean.numpy(), mean, atol=1e-6)
    assert np.allclose(search.ideal.fit.cov.numpy(), cov, atol=1e-6)
    assert len(search.optima) == 1


@pytest.mark.parametrize("name", ["reverse_kl", "pearson", "neyman", "js", "js_pi_0.9", "jeffrey"])
def test_a_gaussian_is_its_own_ideal(name: str) -> None:
    """Data that are one correlated Gaussian: every divergence's only optimum is the data
    themselves, at the value f(1)."""
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.7]], dtype=torch.float64)
    data = Mixture([1.0], [[0.5, -0.3]], cov[None])
    search = IdealSearch(Landscape(data), row_of(name)).run()
    assert len(search.optima) == 1
    assert torch.allclose(
        search.ideal.fit.mean, torch.tensor([0.5, -0.3], dtype=torch.float64), atol=1e-4
    )
    assert torch.allclose(search.ideal.fit.cov, cov, atol=1e-4)
    assert search.ideal.value == pytest.approx(0.0, abs=1e-7)


def test_values_against_numpy_quadrature() -> None:
    """The landscape's value at fixed fits (wide, narrow, far, correlated) against the numpy
    integrands on a fine grid, for every row."""
    weights, means, covs = MIXTURES_2D["separated"]
    data = Mixture(weights, means, np.stack(covs))
    landscape = Landscape(data)
    fits = [
        GaussianFit.of([0.3, 0.2], [[3.0, 1.0], [1.0, 1.6]]),
        GaussianFit.of([1.4, 0.9], [[0.5, 0.0], [0.0, 0.5]]),
        GaussianFit.of([-1.0, 0.5], [[1.0, -0.4], [-0.4, 0.6]]),
    ]
    axes = [np.linspace(-14, 14, 2401)] * 2
    gx, gy = np.meshgrid(*axes, indexing="ij")
    x = np.stack([gx.ravel(), gy.ravel()], 1)
    lp = mixture_log_density(weights, means, covs, x)
    for fit in fits:
        lq = mixture_log_density([1.0], [fit.mean.numpy()], [fit.cov.numpy()], x)
        for name in ROWS:
            reference = float(
                np.trapezoid(
                    np.trapezoid(integrand(name, lp, lq).reshape(2401, 2401), axes[1]), axes[0]
                )
            )
            mine = landscape.fit_value(row_of(name), fit)
            if not math.isfinite(reference) or reference > 1e6:
                assert mine > 1e6, (name, fit.as_dict(), mine, reference)
                continue
            tolerance = 2e-4 if name == "total_variation" else 1e-6
            assert mine == pytest.approx(reference, rel=tolerance, abs=tolerance), (
                name,
                fit.as_dict(),
            )


def test_chi_square_infinite_exactly_where_the_tails_diverge() -> None:
    """Pearson ∫p²/q is finite iff every component's covariance is below 2Σ_q; Neyman ∫q²/p is
    finite when 2Λ_q − Λ_k ≻ 0 for the component k that dominates the tails (here one
    component): checked against those closed-form conditions on a line of widths."""
    data = Mixture([1.0], [[0.0]], [[[1.0]]])
    landscape = Landscape(data)
    for sigma in [0.5, 0.65, 0.69, 0.72, 0.8, 1.0, 1.3, 1.4, 1.45, 2.0]:
        fit = GaussianFit.of([0.2], [[sigma**2]])
        pearson = landscape.fit_value(DIVERGENCES["pearson"], fit)
        neyman = landscape.fit_value(DIVERGENCES["neyman"], fit)
        assert math.isfinite(pearson) == (sigma**2 > 0.5), (sigma, pearson)
        assert math.isfinite(neyman) == (sigma**2 < 2.0), (sigma, neyman)
        if math.isfinite(pearson):
            # ∫N(x; 0, 1)²/N(x; μ, s²) dx − 1 = s/√(2π) ∫exp(−a x² − b x + c) dx − 1 with
            # a = 1 − 1/(2s²), b = μ/s², c = μ²/(2s²): s/√(2π) √(π/a) e^{b²/4a + c} − 1
            s2, mu = sigma**2, 0.2
            a, b, c = 1 - 1 / (2 * s2), mu / s2, mu**2 / (2 * s2)
            closed = sigma / math.sqrt(2 * math.pi) * math.sqrt(math.pi / a)
            closed = closed * math.exp(b * b / (4 * a) + c) - 1
            assert pearson == pytest.approx(closed, rel=1e-6)


# ------------------------------------------------------------------------------------------------
# two equal components' landscape: local optima recorded, JS_π's global optimum at π = 0.7
def equal_mixture() -> Mixture:
    """Two equal, separated components: the landscape of the earlier default problem."""
    return Mixture.isotropic([0.5, 0.5], [[-2.0, -1.0], [2.0, 1.0]], [0.6, 0.6])


def test_reverse_kl_records_both_modes_and_the_covering_optimum() -> None:
    search = IdealSearch(Landscape(equal_mixture()), DIVERGENCES["reverse_kl"]).run()
    means = sorted(tuple(round(float(v), 1) for v in o.fit.mean) for o in search.optima)
    assert means == [(-2.0, -1.0), (0.0, 0.0), (2.0, 1.0)]
    covering = next(o for o in search.optima if abs(float(o.fit.mean[0])) < 0.1)
    assert covering.value > search.ideal.value + 0.5
    assert len(search.global_optima) == 2  # the two mirror-image modes tie


def test_js_pi_global_optimum_changes_with_pi() -> None:
    landscape = Landscape(equal_mixture())
    covering = IdealSearch(landscape, row_of("js_pi_0.1")).run().ideal
    seeking = IdealSearch(landscape, row_of("js_pi_0.7")).run()
    assert float(covering.fit.cov.trace()) > 5.0
    assert float(seeking.ideal.fit.cov.trace()) < 1.0  # one mode beats covering at π = 0.7
    assert seeking.ideal.value == pytest.approx(0.1622, abs=5e-4)
    assert any(o.value == pytest.approx(0.1716, abs=5e-4) for o in seeking.optima)


def test_compare_reports_gap_distance_and_basin() -> None:
    search = IdealSearch(Landscape(equal_mixture()), DIVERGENCES["reverse_kl"]).run()
    covering = next(o for o in search.optima if abs(float(o.fit.mean[0])) < 0.1)
    near = GaussianFit(covering.fit.mean + 0.05, covering.fit.cov)
    report = compare(search, near)
    assert report["gap"] == pytest.approx(report["achieved"] - search.ideal.value)
    assert report["gap"] > 0.5
    assert search.optima[report["basin"]].fit is not None
    assert report["local_optima"][report["basin"]]["distance"] < 0.1  # its basin: the covering fit
    mode = GaussianFit(
        torch.tensor([1.98, 1.0], dtype=torch.float64), 0.37 * torch.eye(2, dtype=torch.float64)
    )
    assert compare(search, mode)["distance"] < 0.05  # the nearest of the two tied modes


def test_nearest_divergence_names_the_row_whose_ideal_the_fit_is() -> None:
    weights, means, stds = MIXTURES_1D["overlapping"]
    data = Mixture.isotropic(weights, [[m] for m in means], stds)
    landscape = Landscape(data)
    names = ["kl", "reverse_kl", "pearson", "squared_hellinger", "js"]
    searches = {n: IdealSearch(landscape, row_of(n)).run() for n in names}
    for name in names:
        ideal = searches[name].ideal.fit
        nudged = GaussianFit(ideal.mean + 0.002, ideal.cov)
        report = nearest_divergence(searches, nudged)
        assert report["answer"] == name
        assert report["divergences"][name]["excess"] >= -1e-9


# ------------------------------------------------------------------------------------------------
# objective=direct at its defaults lands on the global ideal; every run records its ideal
def direct_run(gandiv, tmp_path, name: str, *extra: str) -> dict:
    divergence = ["objective.divergence=js_pi", f"objective.pi={name[6:]}"]
    if not name.startswith("js_pi_"):
        divergence = [f"objective.divergence={name}"]
    result = gandiv("train", "objective=direct", *divergence, *extra, "hydra.run.dir=run")
    assert result.code == 0, result.err
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def assert_on_ideal(summary: dict) -> None:
    ideal = summary["ideal"]
    fit = GaussianFit.of(summary["params"]["mean"], summary["params"]["cov"])
    target = GaussianFit.of(ideal["params"]["mean"], ideal["params"]["cov"])
    assert (fit.mean - target.mean).abs().max() < 0.01, (summary["params"], ideal["params"])
    assert (fit.cov - target.cov).abs().max() < 0.01, (summary["params"], ideal["params"])
    assert abs(ideal["gap"]) < 1e-3
    assert ideal["value"] == min(o["value"] for o in ideal["local_optima"])


@pytest.mark.parametrize("name", ["neyman", "js_pi_0.7"])
def test_direct_lands_on_the_global_ideal_at_its_defaults(gandiv, tmp_path, name) -> None:
    """On two equal, separated components, where gradient descent from the model's
    initialisation ends on the covering optimum (JS_π at π = 0.7) or never moves (Neyman:
    infinite there), direct at its defaults still ends on the global ideal, mode seeking in both
    cases."""
    equal = ["dataset.weights=[0.5,0.5]", "dataset.means=[[-2,-1],[2,1]]", "dataset.stds=[0.6,0.6]"]
    summary = direct_run(gandiv, tmp_path, name, *equal)
    assert_on_ideal(summary)
    assert np.trace(np.asarray(summary["params"]["cov"])) < 1.0  # one mode


@pytest.mark.slow
@pytest.mark.parametrize("name", ROWS)
@pytest.mark.parametrize("mixture", ["default", "separated-1d", "three-1d", "overlapping-2d"])
def test_direct_lands_on_the_global_ideal_everywhere(gandiv, tmp_path, mixture, name) -> None:
    data: list[str] = []
    if mixture.endswith("1d"):
        weights, means, stds = MIXTURES_1D[mixture[:-3]]
        data = [
            f"dataset.weights={weights}",
            f"dataset.means={[[m] for m in means]}",
            f"dataset.stds={stds}",
        ]
    elif mixture == "overlapping-2d":
        weights, means, covs = MIXTURES_2D["overlapping"]
        data = [
            f"dataset.weights={weights}",
            f"dataset.means={means}",
            "dataset.stds=null",
            f"dataset.covs={[c.tolist() for c in covs]}",
        ]
    assert_on_ideal(direct_run(gandiv, tmp_path, name, *data))


def test_every_run_of_a_gaussian_records_its_ideal(gandiv, tmp_path) -> None:
    result = gandiv("train", "objective=reverse_kl", *TINY, "hydra.run.dir=run")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    ideal = summary["ideal"]
    assert ideal["divergence"] == "reverse_kl"
    # on the default mixture: the heavy broad component (0.3292), or the narrow one (1.1827)
    assert ideal["value"] == pytest.approx(0.3292, abs=1e-3)
    assert sorted(round(o["value"], 3) for o in ideal["local_optima"]) == [0.329, 1.183]
    fit = GaussianFit.of(summary["params"]["mean"], summary["params"]["cov"])
    shipped = Mixture.isotropic([0.3, 0.7], [[-3.0, -1.0], [1.3, 0.4]], [0.4, 1.5])
    achieved = Landscape(shipped).fit_value(DIVERGENCES["reverse_kl"], fit)
    assert ideal["achieved"] == pytest.approx(achieved, rel=1e-6)
    assert ideal["gap"] == pytest.approx(achieved - ideal["value"], rel=1e-6)
    # without a known target, the block says why
    result = gandiv("train", "objective=ns_gan", *TINY, "hydra.run.dir=ns")
    assert result.code == 0, result.err
    block = json.loads((tmp_path / "ns" / "summary.json").read_text())["ideal"]
    assert block["divergence"] is None and "ns_gan" in block["reason"]


def test_gaussian_model_assign_sets_mean_and_covariance() -> None:
    from gandiv.models import GaussianModel

    model = GaussianModel(2)
    cov = torch.tensor([[2.0, -0.7], [-0.7, 0.5]], dtype=torch.float64)
    model.assign(torch.tensor([0.3, -1.2]), cov)
    assert torch.allclose(model.mean.double(), torch.tensor([0.3, -1.2], dtype=torch.float64))
    assert torch.allclose(model.covariance.double(), cov, atol=1e-6)


def test_eval_names_the_nearest_divergence(gandiv, tmp_path) -> None:
    result = gandiv("train", "objective=reverse_kl", "plot.every=0", "hydra.run.dir=run")
    assert result.code == 0, result.err
    result = gandiv(
        "eval",
        "run=run",
        "eval.nearest=[kl,reverse_kl,js,pearson]",
        "eval.critic.divergences=[js]",
    )
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    nearest = report["nearest_divergence"]
    assert nearest["answer"] == "reverse_kl"
    assert nearest["ranking"][0] == "reverse_kl" and set(nearest["ranking"]) == {
        "kl",
        "reverse_kl",
        "js",
        "pearson",
    }
    assert report["ideal"]["divergence"] == "reverse_kl"
    assert report["ideal"]["gap"] == pytest.approx(nearest["divergences"]["reverse_kl"]["excess"])
    bad = gandiv("eval", "run=run", "eval.nearest=[bogus]")
    assert bad.code == 2 and "eval.nearest" in bad.err and "'bogus'" in bad.err


def test_the_eval_ideals_report_is_a_plain_function_of_the_runs_objects() -> None:
    """eval.json's ``ideal`` and ``nearest_divergence`` from objects alone (no config, no Hydra):
    a Gaussian placed on the reverse KL ideal is on its target's ideal and nearest to reverse KL,
    each row searched once through the caller's `search_for` (the per-process cache)."""
    from gandiv.evaluation.report import ideals_report
    from gandiv.models import GaussianModel

    weights, means, stds = MIXTURES_1D["overlapping"]
    data = Mixture.isotropic(weights, [[m] for m in means], stds)
    searched: list[str] = []

    def search_for(row):
        searched.append(row.name)
        return IdealSearch(Landscape(data), row).run()

    target = search_for(row_of("reverse_kl"))
    model = GaussianModel(1)
    ideal = target.ideal.fit
    model.assign(ideal.mean.float() + 0.002, ideal.cov.float())
    report = ideals_report(
        target, model, data, ["kl", "reverse_kl", "js_pi"], [0.2, 0.8], search_for
    )
    assert report["ideal"]["divergence"] == "reverse_kl"
    assert report["ideal"]["gap"] == pytest.approx(0.0, abs=1e-4)
    nearest = report["nearest_divergence"]
    assert nearest["answer"] == "reverse_kl"
    assert set(nearest["divergences"]) == {"kl", "reverse_kl", "js_pi_0.2", "js_pi_0.8"}
    assert searched == ["reverse_kl", "kl", "reverse_kl", "js_pi_0.2", "js_pi_0.8"]
    # without a target, the reason stands in for the block; an implicit model has no ideals
    assert ideals_report("no target", model, data, [], [], search_for)["ideal"] == {
        "divergence": None,
        "reason": "no target",
    }
