"""Sample-based evaluation metrics against independent computations: mode statistics against
hand-built samples and hand-computed histograms, the KDE against numpy double sums and Gaussian
closed forms, sample distances against numpy double sums and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from gandiv.data.toy import Mixture, gaussian, grid25, ring8
from gandiv.evaluation import distances, kde
from gandiv.evaluation.distances import (
    MMD_BANDWIDTH_SCALES,
    energy_distance,
    mmd2_unbiased,
    sample_distances,
    sliced_wasserstein,
)
from gandiv.evaluation.kde import (
    kde_ground_truth,
    kde_log_prob,
    kde_log_prob_on_grid,
    scott_bandwidth,
)
from gandiv.evaluation.modes import mahalanobis, mode_metrics
from gandiv.evaluation.quadrature import ground_truth, make_grid


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def js_histograms(h: list[float], w: list[float]) -> float:
    """JS(h, w) in nats written out term by term (0 log 0 = 0)."""
    total = 0.0
    for a, b in zip(h, w, strict=True):
        m = 0.5 * (a + b)
        total += 0.5 * (a * math.log(a / m) if a > 0 else 0.0)
        total += 0.5 * (b * math.log(b / m) if b > 0 else 0.0)
    return total


def near_means(mixture: Mixture, keep: list[int], per_mode: int) -> Tensor:
    """`per_mode` points around each kept component, at Mahalanobis distance 1 in a ring of
    directions (all within 3 std, each nearest to its own component)."""
    angles = torch.arange(per_mode, dtype=torch.float64) * (2 * math.pi / per_mode)
    unit = torch.stack([angles.cos(), angles.sin()], dim=1)  # (per_mode, 2)
    chol = torch.linalg.cholesky(mixture.covs)
    points = [mixture.means[k] + unit @ chol[k].T for k in keep]
    return torch.cat(points).to(torch.float32)


# ------------------------------------------------------------------------------------- modes


def test_mahalanobis_matches_numpy() -> None:
    cov = np.array([[[2.0, 0.6], [0.6, 0.5]], [[0.3, -0.1], [-0.1, 1.5]]])
    mixture = Mixture([0.4, 0.6], [[0.0, 1.0], [-2.0, 0.5]], cov)
    x = torch.randn(50, 2, generator=gen(1), dtype=torch.float64)
    expected = np.stack(
        [
            np.sqrt(np.einsum("ni,ij,nj->n", x.numpy() - m, np.linalg.inv(c), x.numpy() - m))
            for m, c in zip(mixture.means.numpy(), cov, strict=True)
        ],
        axis=1,
    )
    np.testing.assert_allclose(mahalanobis(x, mixture).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("make", [ring8, grid25], ids=["ring8", "grid25"])
def test_perfect_sample_covers_every_mode(make) -> None:
    mixture = make()
    n = 20_000
    out = mode_metrics(mixture.sample(n, gen(2)), mixture)
    k = len(mixture.weights)
    assert out["covered"] == k and out["n_modes"] == k
    # within 3 std of a 2-D Gaussian: P(χ²₂ ≤ 9) = 1 − e^{−4.5}; 5 binomial stds
    p_in = 1 - math.exp(-4.5)
    assert abs(out["high_quality"] - p_in) < 5 * math.sqrt(p_in * (1 - p_in) / n)
    # multinomial noise alone: E JS ≈ (K − 1)/(8n) ≈ 1.5e-4 for grid25
    assert 0.0 <= out["hist_js"] < 1e-3


@pytest.mark.parametrize("missing", [[3], [0, 7, 12, 24]])
def test_missing_modes_and_their_histogram(missing: list[int]) -> None:
    mixture = grid25()
    keep = [k for k in range(25) if k not in missing]
    out = mode_metrics(near_means(mixture, keep, per_mode=40), mixture)
    assert out["covered"] == 25 - len(missing)
    assert out["high_quality"] == 1.0
    kept = 25 - len(missing)
    h = [0.0 if k in missing else 1 / kept for k in range(25)]
    assert out["hist_js"] == pytest.approx(js_histograms(h, [1 / 25] * 25), rel=1e-10)
    # by hand for one missing mode: ½[log(2/(1 + 22/25))] + ½[22/25 log(2/(1 + 25/22)) + 3/25 log 2]
    if missing == [3]:
        hand = 0.5 * math.log(2 / (1 + 24 / 25))
        hand += 0.5 * (24 / 25 * math.log(2 / (1 + 25 / 24)) + 1 / 25 * math.log(2))
        assert out["hist_js"] == pytest.approx(hand, rel=1e-10)


def test_unequal_weights_histogram() -> None:
    mixture = Mixture.isotropic([0.5, 0.3, 0.2], [[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], [0.5] * 3)
    samples = torch.cat([near_means(mixture, [0], 60), near_means(mixture, [1], 40)])
    out = mode_metrics(samples, mixture)
    assert out["covered"] == 2
    assert out["hist_js"] == pytest.approx(js_histograms([0.6, 0.4, 0.0], [0.5, 0.3, 0.2]))


def test_far_samples_lower_high_quality_only() -> None:
    mixture = ring8()
    good = near_means(mixture, list(range(8)), per_mode=30)  # 240 points
    far = torch.full((60, 2), 10.0)
    out = mode_metrics(torch.cat([good, far]), mixture)
    assert out["high_quality"] == pytest.approx(240 / 300, abs=1e-12)
    assert out["covered"] == 8
    assert out["hist_js"] == pytest.approx(0.0, abs=1e-12)
    nothing = mode_metrics(far, mixture)
    assert nothing["high_quality"] == 0.0 and nothing["covered"] == 0
    assert nothing["hist_js"] == pytest.approx(math.log(2))


def test_coverage_needs_one_percent_of_the_expected_share() -> None:
    mixture = Mixture.isotropic([0.5, 0.5], [[0.0, 0.0], [10.0, 0.0]], [1.0, 1.0])
    # n = 2000: each mode expects 1000 samples, 1% of that is 10
    far = torch.full((1, 2), 50.0)
    for in_second, covered in [(9, 1), (10, 2)]:
        samples = torch.cat(
            [
                near_means(mixture, [0], 1999 - in_second),
                near_means(mixture, [1], in_second),
                far,
            ]
        )
        assert len(samples) == 2000
        assert mode_metrics(samples, mixture)["covered"] == covered


def test_within_and_nearest_use_mahalanobis_distance() -> None:
    stretched = gaussian([0.0, 0.0], [[4.0, 0.0], [0.0, 0.01]])  # stds 2 and 0.1
    # (5, 0) is 2.5 std away, (0, 0.5) is 5 std away, though nearer in Euclidean distance
    out = mode_metrics(torch.tensor([[5.0, 0.0], [0.0, 0.5]]), stretched)
    assert out["high_quality"] == 0.5
    # (1, 0): Euclidean-nearer to B (0.5 vs 1) but Mahalanobis-nearer to A (0.5 vs 1)
    two = Mixture.isotropic([0.5, 0.5], [[0.0, 0.0], [1.5, 0.0]], [2.0, 0.5])
    out = mode_metrics(torch.tensor([[1.0, 0.0]]), two)
    assert out["hist_js"] == pytest.approx(js_histograms([1.0, 0.0], [0.5, 0.5]))


def test_mode_metrics_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        mode_metrics(torch.zeros(5, 3), ring8())
    with pytest.raises(ValueError, match="shape"):
        mode_metrics(torch.zeros(0, 2), ring8())


# --------------------------------------------------------------------------------------- KDE


def numpy_kde(points: np.ndarray, samples: np.ndarray, h: float) -> np.ndarray:
    """log (1/M) Σ_j (2πh²)^{−d/2} exp(−‖x − s_j‖²/2h²) by an explicit double loop."""
    d = samples.shape[1]
    out = []
    for x in points:
        terms = [
            (2 * math.pi * h**2) ** (-d / 2) * math.exp(-np.sum((x - s) ** 2) / (2 * h**2))
            for s in samples
        ]
        out.append(math.log(sum(terms) / len(samples)))
    return np.array(out)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_kde_log_prob_matches_double_sum(dim: int, monkeypatch: pytest.MonkeyPatch) -> None:
    g = gen(3)
    points = torch.randn(9, dim, generator=g, dtype=torch.float64)
    samples = torch.randn(13, dim, generator=g, dtype=torch.float64)
    expected = numpy_kde(points.numpy(), samples.numpy(), 0.7)
    np.testing.assert_allclose(kde_log_prob(points, samples, 0.7).numpy(), expected, rtol=1e-12)
    monkeypatch.setattr(kde, "_CHUNK_ELEMENTS", 20)  # blocks of one point
    np.testing.assert_allclose(kde_log_prob(points, samples, 0.7).numpy(), expected, rtol=1e-12)


def test_kde_log_prob_far_from_every_sample() -> None:
    # one sample: log q̂ = log N(x; s, h² I) exactly, even 100 bandwidths away (no underflow)
    x = torch.tensor([[10.0, 0.0]], dtype=torch.float64)
    value = float(kde_log_prob(x, torch.zeros(1, 2), 0.1))
    assert value == pytest.approx(-0.5 * 100.0**2 - math.log(2 * math.pi * 0.01), rel=1e-12)


def test_kde_on_grid_matches_pointwise(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = torch.randn(700, 2, generator=gen(4)) * torch.tensor([1.0, 0.3])
    grid = make_grid([-12.0, -9.0], [12.0, 9.0], 90)  # corners far beyond every sample
    pointwise = kde_log_prob(grid.points, samples, 0.12)
    assert float(pointwise.min()) < -3000  # the underflow-prone regime is tested
    on_grid = kde_log_prob_on_grid(grid, samples, 0.12)
    torch.testing.assert_close(on_grid, pointwise, rtol=1e-11, atol=1e-9)
    monkeypatch.setattr(kde, "_CELL_SAMPLES", 7)  # cells cut into many parts
    torch.testing.assert_close(kde_log_prob_on_grid(grid, samples, 0.12), pointwise)
    monkeypatch.setattr(kde, "_CELLS_PER_AXIS", 1)  # one wide cell: many points recomputed
    torch.testing.assert_close(kde_log_prob_on_grid(grid, samples, 0.12), pointwise)
    line = make_grid([-5.0], [5.0], 50)
    torch.testing.assert_close(
        kde_log_prob_on_grid(line, samples[:, :1], 0.3),
        kde_log_prob(line.points, samples[:, :1], 0.3),
    )


def test_scott_bandwidth_formula() -> None:
    samples = torch.randn(500, 3, generator=gen(5)) * torch.tensor([1.0, 2.0, 0.5])
    stds = np.std(samples.numpy().astype(np.float64), axis=0, ddof=1)
    assert scott_bandwidth(samples) == pytest.approx(np.mean(stds) * 500 ** (-1 / 7), rel=1e-9)


STANDARD = gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])


def exact_metrics(shift: float, var: float) -> dict[str, float]:
    """Quadrature of the data N(0, I) against the Gaussian N((shift, 0), var·I)."""
    grid = make_grid([-14.0, -14.0], [14.0, 14.0], 300)
    model = gaussian([shift, 0.0], [[var, 0.0], [0.0, var]])
    return ground_truth(STANDARD.log_prob(grid.points), model.log_prob(grid.points), grid)


def test_kde_ground_truth_of_the_data_itself_is_small() -> None:
    samples = STANDARD.sample(10_000, gen(6))
    out = kde_ground_truth(STANDARD, samples, pis=(0.5, 0.2))
    assert out["method"] == "kde" and out["n_samples"] == 10_000
    assert out["bandwidth"] == pytest.approx(scott_bandwidth(samples))
    # E q̂ = N(0, (1 + h²)I) gives KL ≈ 0.001; the KDE's sampling noise adds a Jensen bias of
    # O(1/(n h²)), measured ≈ 0.005 for n = 10⁴ (h ≈ 0.21) over seeds
    assert 0.0 < out["kl_pq"] < 0.012 and 0.0 < out["kl_qp"] < 0.012
    assert 0.0 < out["js"] < 0.003
    assert out["js_pi_0.5"] == pytest.approx(out["js"], rel=1e-9)
    assert "js_pi_0.2" in out


def test_kde_ground_truth_of_a_shifted_gaussian() -> None:
    samples = STANDARD.sample(10_000, gen(7)) + torch.tensor([1.0, 0.0])
    out = kde_ground_truth(STANDARD, samples)
    h = float(out["bandwidth"])
    smoothed, exact = exact_metrics(1.0, 1.0 + h**2), exact_metrics(1.0, 1.0)
    # JS has a bounded integrand: the KDE's value sits at that of its mean E q̂ = N(δ, (1+h²)I)
    # up to sampling noise (seed spread ±1.5%); 3% from the smoothed value, 5% from the exact one
    assert float(out["js"]) == pytest.approx(smoothed["js"], rel=0.03)
    assert float(out["js"]) == pytest.approx(exact["js"], rel=0.05)
    # KL weighs P's tail, where Q's samples are sparse: seed spread ±4% around 0.5 at n = 10⁴
    for key in ("kl_pq", "kl_qp"):
        assert float(out[key]) == pytest.approx(exact[key], rel=0.08)


def test_kde_ground_truth_in_one_dimension() -> None:
    data = Mixture.isotropic([0.3, 0.7], [[-1.0], [1.5]], [0.5, 0.7])
    model = gaussian([0.5], [[1.4]])
    samples = model.sample(10_000, gen(8))
    out = kde_ground_truth(data, samples)
    h = float(out["bandwidth"])
    grid = make_grid([-8.0], [10.0], 4000)
    smoothed = gaussian([0.5], [[1.4 + h**2]])
    expected = ground_truth(data.log_prob(grid.points), smoothed.log_prob(grid.points), grid)
    assert float(out["js"]) == pytest.approx(expected["js"], rel=0.05)
    assert float(out["kl_pq"]) == pytest.approx(expected["kl_pq"], rel=0.08)


def test_kde_ground_truth_of_samples_that_all_coincide() -> None:
    # a generator collapsed to one point: Scott's rule gives h = 0; the KDE is N(c, h²I) with h
    # the grid spacing, whose divergences from N(0, I) have closed forms
    c = torch.tensor([1.5, -0.5])
    out = kde_ground_truth(STANDARD, c.expand(1000, 2).to(torch.float32))
    h2 = float(out["bandwidth"]) ** 2
    assert 0.0 < h2 < 0.1**2
    shift = float(c.square().sum())
    kl_qp = 0.5 * (2 * h2 + shift - 2 - 2 * math.log(h2))
    kl_pq = 0.5 * (2 / h2 + shift / h2 - 2 + 2 * math.log(h2))
    assert float(out["kl_qp"]) == pytest.approx(kl_qp, rel=1e-6)
    assert float(out["kl_pq"]) == pytest.approx(kl_pq, rel=1e-6)
    assert 0.6 < float(out["js"]) < math.log(2)


def test_kde_ground_truth_refuses_higher_dimensions() -> None:
    data = gaussian([0.0, 0.0, 0.0], torch.eye(3))
    with pytest.raises(ValueError, match="dimension 1 or 2"):
        kde_ground_truth(data, data.sample(100, gen()))


# --------------------------------------------------------------------------------- distances


def numpy_energy(x: np.ndarray, y: np.ndarray) -> float:
    n, m = len(x), len(y)
    xy = sum(np.linalg.norm(a - b) for a in x for b in y) / (n * m)
    xx = sum(np.linalg.norm(x[i] - x[j]) for i in range(n) for j in range(n) if i != j)
    yy = sum(np.linalg.norm(y[i] - y[j]) for i in range(m) for j in range(m) if i != j)
    return 2 * xy - xx / (n * (n - 1)) - yy / (m * (m - 1))


def test_energy_distance_matches_double_sum() -> None:
    g = gen(9)
    x, y = torch.randn(7, 3, generator=g), torch.randn(5, 3, generator=g) + 0.5
    expected = numpy_energy(x.double().numpy(), y.double().numpy())
    assert float(energy_distance(x, y)) == pytest.approx(expected, rel=1e-10)


def gaussian_energy(mu: float, s1: float, s2: float) -> float:
    """2E|X − Y| − E|X − X'| − E|Y − Y'| for X ~ N(0, s1²), Y ~ N(mu, s2²).

    X − Y ~ N(−mu, s²), s² = s1² + s2², and E|N(m, s²)| = s√(2/π) e^{−m²/2s²} + m(1 − 2Φ(−m/s));
    E|X − X'| = 2 s1/√π.
    """
    s = math.hypot(s1, s2)
    phi = 0.5 * math.erfc(mu / s / math.sqrt(2))
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * (1 - 2 * phi)
    return 2 * e_xy - 2 * s1 / math.sqrt(math.pi) - 2 * s2 / math.sqrt(math.pi)


def test_gaussian_energy_closed_form_is_twice_the_cramer_distance() -> None:
    # in 1-D the energy distance equals 2∫(F(t) − G(t))² dt (Székely & Rizzo 2013, §2)
    t = np.linspace(-30.0, 30.0, 60_001)
    erf = np.vectorize(math.erf)
    for mu, s2 in [(1.0, 1.0), (0.5, 1.5), (0.0, 2.0)]:
        f = 0.5 * (1 + erf(t / math.sqrt(2)))
        g = 0.5 * (1 + erf((t - mu) / (s2 * math.sqrt(2))))
        cramer = float(np.sum((f - g) ** 2) * (t[1] - t[0]))
        assert gaussian_energy(mu, 1.0, s2) == pytest.approx(2 * cramer, rel=1e-6)


@pytest.mark.parametrize(("mu", "s2"), [(1.0, 1.0), (0.5, 1.5), (0.0, 2.0)])
def test_energy_distance_of_gaussians_closed_form(mu: float, s2: float) -> None:
    g = gen(10)
    x = torch.randn(6000, 1, generator=g, dtype=torch.float64)
    y = mu + s2 * torch.randn(6000, 1, generator=g, dtype=torch.float64)
    # the U-statistic's standard deviation at n = 6000 is ≈ 0.016 for (1, 1) (0.023 at n = 3000
    # over 20 seeds, ∝ 1/√n): 4 standard deviations
    assert float(energy_distance(x, y)) == pytest.approx(gaussian_energy(mu, 1.0, s2), abs=0.065)


def test_energy_distance_near_zero_for_equal_distributions() -> None:
    g = gen(11)
    x, y = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    shifted = y + torch.tensor([0.5, 0.0])
    same, other = float(energy_distance(x, y)), float(energy_distance(x, shifted))
    assert abs(same) < 0.01 < 0.1 < other


def numpy_w1(a: np.ndarray, b: np.ndarray) -> float:
    """1-D Wasserstein-1 as ∫|F_a(t) − F_b(t)| dt between the empirical CDFs."""
    knots = np.sort(np.concatenate([a, b]))
    f_a = np.searchsorted(np.sort(a), knots[:-1], side="right") / len(a)
    f_b = np.searchsorted(np.sort(b), knots[:-1], side="right") / len(b)
    return float(np.sum(np.abs(f_a - f_b) * np.diff(knots)))


@pytest.mark.parametrize(("n", "m"), [(50, 50), (37, 61), (1, 4)])
def test_sliced_wasserstein_in_one_dimension_is_w1(n: int, m: int) -> None:
    g = gen(12)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = 0.3 + 2 * torch.rand(m, 1, generator=g, dtype=torch.float64)
    expected = numpy_w1(x[:, 0].numpy(), y[:, 0].numpy())
    assert float(sliced_wasserstein(x, y, gen(), projections=8)) == pytest.approx(expected)


@pytest.mark.parametrize("dim", [2, 3])
def test_sliced_wasserstein_of_a_shift(dim: int) -> None:
    x = torch.randn(500, dim, generator=gen(13), dtype=torch.float64)
    delta = torch.zeros(dim, dtype=torch.float64)
    delta[0], delta[-1] = 1.2, -0.9  # ‖δ‖ = 1.5
    # every projection moves by ⟨θ, δ⟩: SW = mean |⟨θ, δ⟩| → ‖δ‖ E|θ₁|, with
    # E|θ₁| = Γ(d/2) / (√π Γ((d+1)/2)) for θ uniform on the sphere (2/π in 2-D, 1/2 in 3-D)
    e_abs = math.gamma(dim / 2) / (math.sqrt(math.pi) * math.gamma((dim + 1) / 2))
    value = float(sliced_wasserstein(x, x + delta, gen(), projections=4096))
    # Monte Carlo over 4096 directions: relative std ≤ 0.8%
    assert value == pytest.approx(1.5 * e_abs, rel=0.03)


def test_sliced_wasserstein_near_zero_for_equal_distributions() -> None:
    g = gen(14)
    x, y = torch.randn(4000, 2, generator=g), torch.randn(4000, 2, generator=g)
    assert float(sliced_wasserstein(x, y, gen())) < 0.05
    assert float(sliced_wasserstein(x, y + 1.0, gen())) > 0.5


def test_sample_distances_match_their_parts() -> None:
    g = gen(15)
    x = torch.randn(300, 2, generator=g, dtype=torch.float64)
    y = torch.randn(200, 2, generator=g, dtype=torch.float64) * 1.3 + 0.4
    out = sample_distances(x, y, gen(16))
    pooled = torch.cat([x, y]).numpy()
    pairs = [
        np.linalg.norm(pooled[i] - pooled[j])
        for i in range(len(pooled))
        for j in range(i + 1, len(pooled))
    ]
    bandwidths = [float(np.median(pairs)) * s for s in MMD_BANDWIDTH_SCALES]
    assert out["mmd"] == pytest.approx(float(mmd2_unbiased(x, y, bandwidths)), rel=1e-9)
    assert out["energy"] == pytest.approx(float(energy_distance(x, y)), rel=1e-12)
    assert out["sliced_wasserstein"] == pytest.approx(float(sliced_wasserstein(x, y, gen(16))))
    assert out["mmd"] > 0 and out["energy"] > 0


def test_sample_distances_subsample_and_are_near_zero_for_equal_distributions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = gen(17)
    x, y = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    same = sample_distances(x, y, gen(18), max_samples=700)
    other = sample_distances(x, y + 0.5, gen(18), max_samples=700)
    for key in ("mmd", "energy", "sliced_wasserstein"):
        assert abs(same[key]) < 0.1 * other[key], key
    assert sample_distances(x, y, gen(18), max_samples=700) == same  # deterministic
    monkeypatch.setattr(distances, "_MEDIAN_POINTS", 50)  # a random subset for the median
    again = sample_distances(x, y + 0.5, gen(18), max_samples=700)
    assert again["mmd"] == pytest.approx(other["mmd"], rel=0.3)
