"""Tests of the toy distributions (the README's datasets) against independent computations.

Densities are checked against hand-written numpy formulas, torch.distributions and a high-resolution
numpy reference quadrature; samplers are checked against bin integrals of the density with a
chi-square statistic (and the same check is shown to reject slightly wrong samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import distributions as D

from gandiv.data.toy import Mixture, SwissRoll, ToyData, gaussian, grid25, ring8

# ---------------------------------------------------------------- datasets under test

GAUSS2_MEAN = [0.5, -1.0]
GAUSS2_COV = [[1.0, 0.6], [0.6, 0.5]]
GAUSS3_MEAN = [1.0, -1.0, 0.5]
GAUSS3_COV = [[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]]
MIX1_W, MIX1_MU, MIX1_S = [0.3, 0.7], [[-2.0], [2.0]], [0.5, 1.0]
MIX2_W = [0.2, 0.5, 0.3]
MIX2_MU = [[-1.0, 0.0], [1.0, 1.0], [0.0, -1.5]]
MIX2_COV = [
    [[0.3, 0.1], [0.1, 0.2]],
    [[0.1, -0.05], [-0.05, 0.4]],
    [[0.5, 0.0], [0.0, 0.05]],
]


def make(name: str) -> ToyData:
    if name == "gaussian2":
        return gaussian(GAUSS2_MEAN, GAUSS2_COV)
    if name == "gaussian3":
        return gaussian(GAUSS3_MEAN, GAUSS3_COV)
    if name == "mixture1d":
        return Mixture.isotropic(MIX1_W, MIX1_MU, MIX1_S)
    if name == "mixture2d":
        return Mixture(MIX2_W, MIX2_MU, MIX2_COV)
    if name == "ring8":
        return ring8()
    if name == "grid25":
        return grid25()
    if name == "swiss_roll":
        return SwissRoll()
    raise KeyError(name)


def np_ring8() -> tuple[np.ndarray, np.ndarray, float]:
    """Weights, means, std of the 8-Gaussians toy, written out from its definition."""
    c = 1 / np.sqrt(2)
    centres = [(1, 0), (-1, 0), (0, 1), (0, -1), (c, c), (c, -c), (-c, c), (-c, -c)]
    return np.full(8, 1 / 8), 2.0 * np.array(centres, dtype=float) / 1.414, 0.02 / 1.414


def np_grid25() -> tuple[np.ndarray, np.ndarray, float]:
    """Weights, means, std of the 5×5 grid toy, written out from its definition."""
    centres = [(2.0 * i, 2.0 * j) for i in range(-2, 3) for j in range(-2, 3)]
    return np.full(25, 1 / 25), np.array(centres) / 2.828, 0.05 / 2.828


def np_params(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, covs) of each mixture dataset, from the literals above (not the code)."""
    if name == "gaussian2":
        return np.ones(1), np.array([GAUSS2_MEAN]), np.array([GAUSS2_COV])
    if name == "gaussian3":
        return np.ones(1), np.array([GAUSS3_MEAN]), np.array([GAUSS3_COV])
    if name == "mixture1d":
        return np.array(MIX1_W), np.array(MIX1_MU), np.array(MIX1_S)[:, None, None] ** 2
    if name == "mixture2d":
        return np.array(MIX2_W), np.array(MIX2_MU), np.array(MIX2_COV)
    w, mu, s = np_ring8() if name == "ring8" else np_grid25()
    return w, mu, np.repeat((s**2 * np.eye(2))[None], len(w), axis=0)


def np_logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(a - m).sum(axis=axis))


def np_mixture_log_prob(
    x: np.ndarray, w: np.ndarray, mu: np.ndarray, cov: np.ndarray
) -> np.ndarray:
    """log Σ_k w_k N(x; μ_k, Σ_k) with explicit inverses and determinants."""
    d = mu.shape[1]
    terms = []
    for wk, mk, ck in zip(w, mu, cov, strict=True):
        diff = x - mk
        maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(ck), diff)
        log_norm = -0.5 * (d * np.log(2 * np.pi) + np.log(np.linalg.det(ck)))
        terms.append(np.log(wk) + log_norm - 0.5 * maha)
    return np_logsumexp(np.stack(terms, axis=1), axis=1)


def np_swiss_roll_log_prob(x: np.ndarray, noise: float = 0.25, scale: float = 7.5) -> np.ndarray:
    """Reference log-density: composite Simpson over u with 200,000 subintervals, in numpy."""
    m = 200_000
    u = np.linspace(0.0, 1.0, m + 1)
    w = np.ones(m + 1)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    log_w = np.log(w / (3 * m))
    t = 1.5 * np.pi * (1 + 2 * u)
    cx, cy = t * np.cos(t) / scale, t * np.sin(t) / scale
    var = (noise / scale) ** 2
    out = []
    for xs in np.array_split(x, max(1, len(x) // 16)):
        sq = (xs[:, :1] - cx) ** 2 + (xs[:, 1:] - cy) ** 2
        out.append(np_logsumexp(log_w - sq / (2 * var), axis=1) - np.log(2 * np.pi * var))
    return np.concatenate(out)


def log_prob_np(ds: ToyData, x: np.ndarray) -> np.ndarray:
    return ds.log_prob(torch.from_numpy(x)).numpy()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


MIXTURES = ["gaussian2", "gaussian3", "mixture1d", "mixture2d", "ring8", "grid25"]
ALL = [*MIXTURES, "swiss_roll"]

# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize("name", ALL)
def test_log_prob_integrates_to_one_over_bounds(name: str) -> None:
    # Trapezoid on a grid of spacing h ≤ length_scale: for Gaussian-smoothed densities the error
    # is ~exp(−2π² (σ/h)²) < 1e-8 (Poisson summation), so 1e-4 leaves room only for real errors.
    ds = make(name)
    b = ds.bounds().numpy()
    h = 0.9 * ds.length_scale()
    axes = [np.linspace(lo, hi, math.ceil((hi - lo) / h) + 1) for lo, hi in b]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    density = np.exp(log_prob_np(ds, mesh.reshape(-1, ds.dim))).reshape(mesh.shape[:-1])
    for axis in reversed(axes):
        density = np.trapezoid(density, axis, axis=-1)
    assert abs(float(density) - 1.0) < 1e-4


# ---------------------------------------------------------------- closed-form densities


@pytest.mark.parametrize("name", MIXTURES)
def test_mixture_log_prob_matches_numpy_formula(name: str) -> None:
    ds = make(name)
    w, mu, cov = np_params(name)
    rng = np.random.default_rng(0)
    b = ds.bounds().numpy()
    # Points over the box, around the means, and far outside (log p of order −1e4).
    x = np.concatenate(
        [
            rng.uniform(b[:, 0], b[:, 1], size=(500, ds.dim)),
            mu[rng.integers(len(mu), size=500)]
            + 2 * np.sqrt(cov[0].diagonal()) * rng.normal(size=(500, ds.dim)),
            rng.uniform(-30, 30, size=(50, ds.dim)),
        ]
    )
    expected = np_mixture_log_prob(x, w, mu, cov)
    np.testing.assert_allclose(log_prob_np(ds, x), expected, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("name", ["gaussian3", "mixture2d", "mixture1d"])
def test_mixture_log_prob_matches_torch_distributions(name: str) -> None:
    w, mu, cov = (torch.from_numpy(a) for a in np_params(name))
    reference = D.MixtureSameFamily(D.Categorical(probs=w), D.MultivariateNormal(mu, cov))
    x = torch.randn(1000, mu.shape[1], generator=gen(1), dtype=torch.float64) * 2
    torch.testing.assert_close(make(name).log_prob(x), reference.log_prob(x), rtol=1e-10, atol=1e-9)


def test_gaussian_log_prob_gradient_is_the_score() -> None:
    # ∇ log N(x; μ, Σ) = −Σ⁻¹ (x − μ): the gradient used by reverse-KL objectives.
    ds = make("gaussian3")
    x = torch.randn(50, 3, generator=gen(2), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ds.log_prob(x).sum(), x)
    diff = x.detach().numpy() - np.array(GAUSS3_MEAN)
    np.testing.assert_allclose(grad.numpy(), -diff @ np.linalg.inv(GAUSS3_COV), rtol=1e-10)


@pytest.mark.parametrize("name", ["ring8", "swiss_roll"])
def test_log_prob_float32_input_computed_in_float64(name: str) -> None:
    # A float32 input gives a float32 output equal to the float64 evaluation at the same points,
    # rounded; a float32 evaluation would differ (‖x − μ‖²/σ² cancels badly for σ ≈ 0.014).
    ds = make(name)
    x = ds.sample(500, gen(3)) * 1.1
    out = ds.log_prob(x)
    assert out.dtype == torch.float32 and out.shape == (500,)
    assert torch.equal(out, ds.log_prob(x.double()).float())


def test_log_prob_keeps_batch_shape_and_rejects_wrong_dimension() -> None:
    ds = make("mixture2d")
    x = torch.randn(4, 5, 2, generator=gen(4), dtype=torch.float64)
    out = ds.log_prob(x)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out.reshape(-1), ds.log_prob(x.reshape(-1, 2)))
    with pytest.raises(ValueError, match=r"expects points of shape \(\.\.\., 2\), got shape"):
        ds.log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"expects points of shape \(\.\.\., 2\)"):
        make("swiss_roll").log_prob(torch.zeros(3, 1))


# ---------------------------------------------------------------- parameters


def _assert_same_means(actual: np.ndarray, expected: np.ndarray) -> None:
    # One-to-one match regardless of component order.
    dist = np.linalg.norm(actual[:, None] - expected[None], axis=-1)
    nearest = dist.argmin(axis=1)
    assert sorted(nearest) == list(range(len(expected)))
    assert dist.min(axis=1).max() < 1e-12


@pytest.mark.parametrize(("name", "reference"), [("ring8", np_ring8), ("grid25", np_grid25)])
def test_ring8_and_grid25_parameters(
    name: str, reference: Callable[[], tuple[np.ndarray, np.ndarray, float]]
) -> None:
    ds = make(name)
    assert isinstance(ds, Mixture)
    w, mu, std = reference()
    for attr in (ds.weights, ds.means, ds.covs):
        assert attr.dtype == torch.float64
    np.testing.assert_allclose(ds.weights.numpy(), w, rtol=1e-14)
    _assert_same_means(ds.means.numpy(), mu)
    np.testing.assert_allclose(ds.covs.numpy(), np.broadcast_to(std**2 * np.eye(2), (len(w), 2, 2)))
    np.testing.assert_allclose(ds.component_stds().numpy(), std, rtol=1e-12)
    assert ds.length_scale() == pytest.approx(std, rel=1e-12)
    assert ds.dim == 2


def test_length_scale_and_component_stds() -> None:
    eig2 = np.linalg.eigvalsh(np.array(GAUSS2_COV))
    assert make("gaussian2").length_scale() == pytest.approx(np.sqrt(eig2[0]), rel=1e-12)
    mix = make("mixture2d")
    assert isinstance(mix, Mixture)
    eigs = np.linalg.eigvalsh(np.array(MIX2_COV))
    assert mix.length_scale() == pytest.approx(np.sqrt(eigs[:, 0].min()), rel=1e-12)
    np.testing.assert_allclose(mix.component_stds().numpy(), np.sqrt(eigs[:, -1]), rtol=1e-12)
    mix1 = make("mixture1d")
    assert isinstance(mix1, Mixture)
    np.testing.assert_allclose(mix1.component_stds().numpy(), MIX1_S, rtol=1e-12)
    assert mix1.length_scale() == pytest.approx(0.5, rel=1e-12) and mix1.dim == 1
    assert SwissRoll(noise=0.3, scale=6.0).length_scale() == pytest.approx(0.05, rel=1e-12)
    assert make("swiss_roll").length_scale() == pytest.approx(0.25 / 7.5, rel=1e-12)


# ---------------------------------------------------------------- bounds


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


@pytest.mark.parametrize("name", MIXTURES)
def test_mixture_bounds_hold_the_mass_and_are_not_loose(name: str) -> None:
    ds = make(name)
    b = ds.bounds()
    assert b.shape == (ds.dim, 2) and b.dtype == torch.float64
    lo, hi = b[:, 0].numpy(), b[:, 1].numpy()
    w, mu, cov = np_params(name)
    sd = np.sqrt(np.einsum("kii->ki", cov))
    # Union bound over coordinates: the mass outside the box is at most this (exact per marginal).
    outside = sum(
        wk * (_phi((lo[i] - mu[k, i]) / sd[k, i]) + _phi((mu[k, i] - hi[i]) / sd[k, i]))
        for k, wk in enumerate(w)
        for i in range(ds.dim)
    )
    assert outside < 1e-6
    assert np.all(lo >= (mu - 8 * sd).min(0)) and np.all(hi <= (mu + 8 * sd).max(0))


def test_swiss_roll_bounds_hold_the_mass_and_are_not_loose() -> None:
    ds = make("swiss_roll")
    b = ds.bounds().numpy()
    t = 1.5 * np.pi * (1 + 2 * np.linspace(0, 1, 1_000_001))
    curve = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 7.5
    sd = 0.25 / 7.5
    # 2 coordinates × 2 sides × Φ(−5.3) < 2.4e-7 of mass can leave a box padded by 5.3 sd.
    assert np.all(b[:, 0] <= curve.min(0) - 5.3 * sd) and np.all(b[:, 1] >= curve.max(0) + 5.3 * sd)
    assert np.all(b[:, 0] >= curve.min(0) - 8 * sd) and np.all(b[:, 1] <= curve.max(0) + 8 * sd)


@pytest.mark.parametrize("name", ALL)
def test_samples_fall_inside_bounds(name: str) -> None:
    ds = make(name)
    x = ds.sample(100_000, gen(5)).double()
    b = ds.bounds()
    assert bool(((x >= b[:, 0]) & (x <= b[:, 1])).all())


# ---------------------------------------------------------------- samples vs density


def _bin_integrals(ds: ToyData, edges: list[np.ndarray], order: int) -> np.ndarray:
    """∫ exp(log_prob) over every bin, by `order`-point Gauss–Legendre per bin and axis."""
    ref_x, ref_w = np.polynomial.legendre.leggauss(order)
    nodes, weights = [], []
    for e in edges:
        half = np.diff(e)[:, None] / 2
        nodes.append((e[:-1, None] + half * (ref_x + 1)).ravel())
        weights.append((half * ref_w).ravel())
    mesh = np.stack(np.meshgrid(*nodes, indexing="ij"), axis=-1).reshape(-1, ds.dim)
    f = np.exp(log_prob_np(ds, mesh)).reshape([len(n) for n in nodes])
    f = f * weights[0].reshape([-1] + [1] * (ds.dim - 1))
    if ds.dim == 2:
        f = f * weights[1][None, :]
    shape = [s for e in edges for s in (len(e) - 1, order)]
    return f.reshape(shape).sum(axis=tuple(range(1, 2 * ds.dim, 2)))


def _chi_square(x: np.ndarray, edges: list[np.ndarray], probs: np.ndarray) -> tuple[float, int]:
    """Pearson χ² of the histogram of x against bin probabilities, and its degrees of freedom.

    Bins expecting < 5 samples are pooled, with the mass outside the histogram, into one cell,
    which is kept only if it too expects ≥ 5 samples.
    """
    counts, _ = np.histogramdd(x, bins=edges)
    n = len(x)
    expected = n * probs.ravel()
    keep = expected >= 5
    observed = counts.ravel()[keep]
    chi2 = float((((observed - expected[keep]) ** 2) / expected[keep]).sum())
    cells = int(keep.sum())
    pooled_expected = n - expected[keep].sum()
    if pooled_expected >= 5:
        chi2 += (n - observed.sum() - pooled_expected) ** 2 / pooled_expected
        cells += 1
    return chi2, cells - 1


HIST_CASES = {
    # name: (bins per axis, Gauss–Legendre order per bin, number of samples)
    "gaussian2": (30, 6, 100_000),
    "mixture1d": (80, 6, 100_000),
    "mixture2d": (30, 6, 100_000),
    "ring8": (140, 4, 200_000),
    "grid25": (115, 4, 200_000),
    "swiss_roll": (40, 3, 100_000),
}


@pytest.mark.parametrize("name", list(HIST_CASES))
def test_sample_histogram_matches_density(name: str) -> None:
    # Bins are ≈ 1-3 component stds wide, so wrong means, stds, weights or arm positions all show.
    # For a correct sampler χ² ≈ df ± sqrt(2 df); the threshold df + 6 sqrt(2 df) is a ~5σ event.
    # The same check must reject samples dilated by 5 % about the origin.
    ds = make(name)
    bins, order, n = HIST_CASES[name]
    edges = [np.linspace(lo, hi, bins + 1) for lo, hi in ds.bounds().numpy()]
    probs = _bin_integrals(ds, edges, order)
    assert probs.sum() == pytest.approx(1.0, abs=1e-3)
    x = ds.sample(n, gen(6)).double().numpy()
    chi2, df = _chi_square(x, edges, probs)
    assert df >= 20
    assert chi2 < df + 6 * math.sqrt(2 * df), (chi2, df)
    chi2_wrong, _ = _chi_square(1.05 * x, edges, probs)
    assert chi2_wrong > df + 6 * math.sqrt(2 * df), (chi2_wrong, df)


@pytest.mark.parametrize("name", ["gaussian2", "gaussian3"])
def test_gaussian_sample_moments(name: str) -> None:
    ds = make(name)
    _, mu, cov = np_params(name)
    mu, cov = mu[0], cov[0]
    n = 200_000
    x = ds.sample(n, gen(7)).double().numpy()
    assert x.shape == (n, len(mu))
    mean_se = np.sqrt(cov.diagonal() / n)
    assert np.all(np.abs(x.mean(0) - mu) < 5 * mean_se)
    # Var of the sample covariance entry (i, j) of a Gaussian: (Σ_ii Σ_jj + Σ_ij²) / n.
    cov_se = np.sqrt((np.outer(cov.diagonal(), cov.diagonal()) + cov**2) / n)
    assert np.all(np.abs(np.cov(x, rowvar=False) - cov) < 5 * cov_se)


# ---------------------------------------------------------------- the Swiss roll


def test_swiss_roll_log_prob_matches_reference_quadrature() -> None:
    ds = make("swiss_roll")
    rng = np.random.default_rng(8)
    sd = 0.25 / 7.5
    u = rng.uniform(0, 1, 120)
    t = 1.5 * np.pi * (1 + 2 * u)
    on_curve = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 7.5
    radial = on_curve / np.linalg.norm(on_curve, axis=1, keepdims=True)
    t_ends = np.array([1.5 * np.pi, 4.5 * np.pi])
    ends = np.stack([t_ends * np.cos(t_ends), t_ends * np.sin(t_ends)], axis=1) / 7.5
    b = ds.bounds().numpy()
    x = np.concatenate(
        [
            on_curve + sd * rng.normal(size=on_curve.shape),  # on the roll
            on_curve + sd * rng.uniform(-6, 6, size=(120, 1)) * radial,  # towards the next arms
            np.repeat(ends, 40, axis=0) + sd * rng.uniform(-6, 6, size=(80, 2)),  # around the ends
            rng.uniform(b[:, 0], b[:, 1], size=(200, 2)),  # anywhere in the box
        ]
    )
    expected = np_swiss_roll_log_prob(x)
    actual = log_prob_np(ds, x)
    relevant = expected > -20
    assert relevant.sum() > 250
    np.testing.assert_allclose(actual[relevant], expected[relevant], rtol=0, atol=1e-3)
    assert np.all(actual[~relevant] < -19)


def test_swiss_roll_samples_have_the_expected_log_density() -> None:
    # For a thin tube around a curve, log p(x) ≈ log φ_σ(offset) − log |dc/du|, so
    # E[log p(X)] ≈ −½ log(2πσ²) − ½ − E_u log |dc/du| (curvature and end effects < 0.01 here).
    ds = make("swiss_roll")
    sd = 0.25 / 7.5
    u = (np.arange(100_000) + 0.5) / 100_000
    t = 1.5 * np.pi * (1 + 2 * u)
    speed = np.sqrt(1 + t**2) * 3 * np.pi / 7.5  # |dc/dt| · dt/du / scale
    expected = -0.5 * np.log(2 * np.pi * sd**2) - 0.5 - np.log(speed).mean()
    log_p = ds.log_prob(ds.sample(10_000, gen(9))).double().numpy()
    assert np.isfinite(log_p).all()
    assert abs(log_p.mean() - expected) < 0.04, (log_p.mean(), expected)


def test_swiss_roll_sampler_follows_the_definition() -> None:
    # Unscaled, |c(t)| = t and the polar angle of c(t) is t mod 2π, so each sample gives back its
    # curve parameter t̂ = θ + 2πk (k putting t̂ nearest to the radius) and a radial offset r − t̂
    # of std ≈ noise; u = (t̂ / 1.5π − 1) / 2 must be uniform.
    x = make("swiss_roll").sample(20_000, gen(10)).double().numpy() * 7.5
    r = np.linalg.norm(x, axis=1)
    theta = np.arctan2(x[:, 1], x[:, 0])
    t_hat = theta + 2 * np.pi * np.round((r - theta) / (2 * np.pi))
    u_hat = (t_hat / (1.5 * np.pi) - 1) / 2
    inner = (u_hat > 0.1) & (u_hat < 0.9)
    assert abs(inner.mean() - 0.8) < 5 * math.sqrt(0.8 * 0.2 / len(x))
    counts = np.histogram(u_hat[inner], bins=8, range=(0.1, 0.9))[0]
    share_se = math.sqrt((1 / 8) * (7 / 8) / counts.sum())
    assert np.all(np.abs(counts / counts.sum() - 1 / 8) < 5 * share_se)
    offset = (r - t_hat)[inner]
    assert abs(offset.mean()) < 0.01
    assert offset.std() == pytest.approx(0.25, rel=0.04)


# ---------------------------------------------------------------- determinism and sampling API


@pytest.mark.parametrize("name", ["mixture2d", "ring8", "swiss_roll", "mixture1d"])
def test_sampling_is_deterministic_and_uses_only_the_generator(name: str) -> None:
    ds = make(name)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = ds.sample(1000, gen(11))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(a, ds.sample(1000, gen(11)))
    assert not torch.equal(a, ds.sample(1000, gen(12)))
    assert a.shape == (1000, ds.dim) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert ds.sample(0, gen(11)).shape == (0, ds.dim)
    with pytest.raises(ValueError, match="n=-1"):
        ds.sample(-1, gen(11))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["mixture2d", "grid25", "swiss_roll"])
def test_cuda_sampling_and_log_prob(name: str) -> None:
    ds = make(name)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = ds.sample(5000, g)
    assert x.device.type == "cuda" and x.dtype == torch.float32
    assert torch.equal(x, ds.sample(5000, torch.Generator(device="cuda").manual_seed(0)))
    on_gpu = ds.log_prob(x.double())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), ds.log_prob(x.double().cpu()), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- validation

PD = [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Mixture([-0.5, 1.5], [[0, 0], [1, 1]], [PD, PD]), r"weights must all be positive"),
        (lambda: Mixture([0.0, 1.0], [[0, 0], [1, 1]], [PD, PD]), r"weights must all be positive"),
        (lambda: Mixture([0.5, 0.4], [[0, 0], [1, 1]], [PD, PD]), r"weights must sum to 1"),
        (lambda: Mixture(torch.ones(1, 1), [[0, 0]], [PD]), r"weights must be a non-empty 1-D"),
        (lambda: Mixture([0.5, 0.5], [[0, 0], [1, 1], [2, 2]], [PD, PD]), r"3 means for 2 weights"),
        (
            lambda: Mixture([0.5, 0.5], torch.tensor([0.0, 1.0]), [PD, PD]),
            r"means must have shape \(K, d\)",
        ),
        (
            lambda: Mixture([0.5, 0.5], [[0, 0], [1, 1]], [PD]),
            r"covs must have shape \(K, d, d\) = \(2, 2, 2\).*got shape \(1, 2, 2\)",
        ),
        (
            lambda: Mixture([0.5, 0.5], [[0, 0], [1, 1]], torch.eye(3).repeat(2, 1, 1)),
            r"got shape \(2, 3, 3\)",
        ),
        (
            lambda: Mixture([0.5, 0.5], [[0, 0], [1, 1]], [PD, [[1.0, 0.5], [0.2, 1.0]]]),
            r"covariance of component 1 is not symmetric",
        ),
        (
            lambda: Mixture([0.5, 0.5], [[0, 0], [1, 1]], [[[1.0, 2.0], [2.0, 1.0]], PD]),
            r"covariance of component 0 is not positive-definite",
        ),
        (
            lambda: Mixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 0.0]]]),
            r"component 0 is not positive-definite",
        ),
        (lambda: Mixture([1.0], [[float("nan"), 0.0]], [PD]), r"means must be finite"),
        (
            lambda: Mixture.isotropic([0.5, 0.5], [[0.0], [1.0]], [1.0, 0.0]),
            r"stds must all be pos",
        ),
        (
            lambda: Mixture.isotropic([0.5, 0.5], [[0.0], [1.0]], [1.0, -2.0]),
            r"stds must all be pos",
        ),
        (
            lambda: Mixture.isotropic([0.5, 0.5], [[0.0, 0], [1, 1], [2, 2]], [1.0, 1.0]),
            r"2 stds for means of shape \(3, 2\)",
        ),
        (lambda: gaussian([0.0, 0.0], [[1.0]]), r"cov must have shape \(d, d\) = \(2, 2\)"),
        (lambda: gaussian(torch.zeros(1, 2), PD), r"mean must be a non-empty 1-D vector"),
        (lambda: gaussian([0.0, 0.0], [[1.0, 1.0], [1.0, 1.0]]), r"not positive-definite"),
        (lambda: SwissRoll(noise=0.0), r"noise must be a positive"),
        (lambda: SwissRoll(noise=-0.25), r"noise must be a positive"),
        (lambda: SwissRoll(scale=0.0), r"scale must be a positive"),
        (lambda: SwissRoll(scale=-7.5), r"scale must be a positive"),
        (lambda: SwissRoll(nodes=100), r"nodes must be a positive multiple of 8"),
        (lambda: SwissRoll(nodes=0), r"nodes must be a positive multiple of 8"),
    ],
)
def test_invalid_specifications_raise(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_weights_within_tolerance_are_accepted_and_renormalised() -> None:
    mix = Mixture([0.5, 0.5 + 5e-7], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    assert float(mix.weights.sum()) == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="sum to 1"):
        Mixture([0.5, 0.5 + 5e-6], [[0.0], [1.0]], [[[1.0]], [[1.0]]])


# ---------------------------------------------------------------- training batches


@pytest.mark.parametrize("n_train", [None, 300])
def test_batches_drawn_in_chunks_resume_exactly_from_a_state_round_trip(
    n_train: int | None,
) -> None:
    """Batches come from a buffer of pre-drawn points; with that buffer and the generator's state
    restored (as a checkpoint does) the batch stream is the uninterrupted one, whatever the step."""
    from gandiv.data.splits import CHUNK_POINTS, ToySplits

    data = ring8()
    n = 3000  # CHUNK_POINTS // n batches per draw: a refill every few batches
    assert CHUNK_POINTS // n < 8
    steps = 20

    def stream(cut: int | None) -> list[torch.Tensor]:
        splits = ToySplits(data, n_train, 50, seed=1)
        generator = torch.Generator().manual_seed(0)
        out = []
        for step in range(steps):
            if step == cut:  # what a checkpoint stores, loaded into fresh objects
                state, rng = splits.state_dict(), generator.get_state()
                splits = ToySplits(data, n_train, 50, seed=1)
                splits.load_state_dict(state)
                generator = torch.Generator()
                generator.set_state(rng)
            out.append(splits.batch(n, generator))
        return out

    whole = stream(None)
    assert all(b.shape == (n, 2) for b in whole)
    assert len({b.sum().item() for b in whole}) == steps  # no batch handed out twice
    for cut in (1, 5, 6, 13):
        assert all(torch.equal(a, b) for a, b in zip(whole, stream(cut), strict=True)), cut
