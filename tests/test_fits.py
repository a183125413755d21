"""What each density-based objective converges to, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from .conftest import read_json, run_dirs


def _fit(gandiv, tmp_path, *args: str) -> dict:
    result = gandiv("train", *args)
    assert result.code == 0, result.err
    return read_json(run_dirs(tmp_path)[-1] / "summary.json")


def test_forward_kl_fit_of_a_gaussian_is_moment_matching(gandiv, tmp_path):
    """The maximum-likelihood Gaussian for a mixture has the mixture's mean and covariance."""
    weights = np.array([0.3, 0.7])
    means = np.array([[-2.0, -1.0], [2.0, 1.5]])
    stds = np.array([0.6, 0.4])
    summary = _fit(
        gandiv,
        tmp_path,
        "dataset.weights=[0.3,0.7]",
        "dataset.means=[[-2.0,-1.0],[2.0,1.5]]",
        "dataset.stds=[0.6,0.4]",
        "trainer.batch_size=2048",
        "trainer.steps=1200",
        "trainer.eval_every=0",
    )
    mean = weights @ means
    second = sum(
        w * (s**2 * np.eye(2) + np.outer(m, m))
        for w, m, s in zip(weights, means, stds, strict=True)
    )
    cov = second - np.outer(mean, mean)
    assert np.abs(np.array(summary["params"]["mean"]) - mean).max() < 0.05
    assert np.abs(np.array(summary["params"]["cov"]) - cov).max() < 0.05


def test_reverse_kl_fit_lands_on_one_component(gandiv, tmp_path):
    """KL(Q||P) is mode seeking: the Gaussian settles on one of two well-separated components."""
    summary = _fit(
        gandiv,
        tmp_path,
        "objective=reverse_kl",
        "dataset.weights=[0.5,0.5]",
        "dataset.means=[[-3.0,-1.0],[3.0,1.0]]",
        "dataset.stds=[0.5,0.5]",
        "trainer.steps=1500",
        "trainer.eval_every=0",
    )
    mean, cov = np.array(summary["params"]["mean"]), np.array(summary["params"]["cov"])
    nearest = min(np.abs(mean - np.array(c)).max() for c in ([-3.0, -1.0], [3.0, 1.0]))
    assert nearest < 0.1
    assert np.abs(cov - 0.25 * np.eye(2)).max() < 0.05
    # On one of two equal components KL(Q||P) = log 2 exactly, and P's other half is missed.
    assert summary["kl_qp"] == pytest.approx(math.log(2), abs=0.02)
    assert summary["kl_pq"] > 5


# An asymmetric 1-D two-component mixture: each divergence has a different best Gaussian.
WEIGHTS, MEANS, STDS = [0.35, 0.65], [-1.0, 1.2], [0.6, 0.9]
GENERATORS = {
    "kl": lambda u: u * np.log(u),
    "reverse_kl": lambda u: -np.log(u),
    "pearson": lambda u: (u - 1) ** 2,
    "neyman": lambda u: (1 - u) ** 2 / u,
    "squared_hellinger": lambda u: (np.sqrt(u) - 1) ** 2,
    "jeffrey": lambda u: (u - 1) * np.log(u),
    "js": lambda u: 0.5 * (u * np.log(u) - (u + 1) * np.log((u + 1) / 2)),
    "gan": lambda u: u * np.log(u) - (u + 1) * np.log(u + 1),
    "total_variation": lambda u: 0.5 * np.abs(u - 1),
    "triangular": lambda u: (u - 1) ** 2 / (u + 1),
    "js_pi": lambda u: 0.3 * u * np.log(u) - (0.3 * u + 0.7) * np.log(0.3 * u + 0.7),
}


def _normal(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def _independent_optimum(name: str) -> tuple[float, float]:
    """Coarse-to-fine grid search of (μ, log σ) on ∫ q f(p/q) by the trapezoid rule."""
    x = np.linspace(-12, 12, 12_001)
    p = sum(w * _normal(x, m, s) for w, m, s in zip(WEIGHTS, MEANS, STDS, strict=True))
    f = GENERATORS[name]
    low, high = np.array([-3.0, -2.5]), np.array([3.0, 1.5])
    for _ in range(6):
        mu, log_sigma = (
            a.ravel()
            for a in np.meshgrid(
                np.linspace(low[0], high[0], 41), np.linspace(low[1], high[1], 41), indexing="ij"
            )
        )
        q = np.maximum(_normal(x[None], mu[:, None], np.exp(log_sigma)[:, None]), 1e-300)
        with np.errstate(all="ignore"):
            values = np.trapezoid(q * f(np.maximum(p, 1e-300) / q), x, axis=1)
        best = int(np.nanargmin(values))
        centre = np.array([mu[best], log_sigma[best]])
        low, high = centre - (high - low) / 8, centre + (high - low) / 8
    return float(centre[0]), float(math.exp(centre[1]))


@pytest.mark.parametrize("divergence", list(GENERATORS))
def test_direct_fit_reaches_the_independent_optimum(gandiv, tmp_path, divergence):
    summary = _fit(
        gandiv,
        tmp_path,
        "objective=direct",
        f"objective.divergence={divergence}",
        *(["objective.pi=0.3"] if divergence == "js_pi" else []),
        "dataset.weights=[0.35,0.65]",
        "dataset.means=[[-1.0],[1.2]]",
        "dataset.stds=[0.6,0.9]",
        "trainer.steps=800",
        "trainer.lr=0.02",
        "trainer.eval_every=0",
        "trainer.num_samples=100",
    )
    mu, sigma = _independent_optimum(divergence)
    assert summary["params"]["mean"][0] == pytest.approx(mu, abs=0.02)
    assert math.sqrt(summary["params"]["cov"][0][0]) == pytest.approx(sigma, abs=0.02)
