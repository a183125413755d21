"""The kernel-density ground truth counts every sample wherever it lies, and refuses when it could
mislead: far samples against closed forms, a mixture of near and far samples and kernels that
straddle the grid's box against independent numpy quadrature, refusals with their reasons, and
diverged implicit runs through the real `gandiv eval`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gandiv.data.toy import Mixture, gaussian, ring8
from gandiv.evaluation import kde
from gandiv.evaluation.kde import MIN_SAMPLES, kde_ground_truth
from gandiv.evaluation.quadrature import ground_truth, make_grid

from .conftest import SHARED_SETTINGS, TINY, only_run, read_json

STANDARD = gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
METRICS = ("kl_pq", "kl_qp", "js", "js_pi_0.5")
LOG2 = math.log(2.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def point_mass(c: list[float], n: int = 1000) -> torch.Tensor:
    return torch.tensor(c, dtype=torch.float64).expand(n, 2).clone()


# ---------------------------------------------------------------- numpy reference quadrature


def np_log_standard(x: np.ndarray) -> np.ndarray:
    """log N(x; 0, I) in 2-D."""
    return -0.5 * np.sum(x**2, axis=-1) - math.log(2 * math.pi)


def np_log_kde(x: np.ndarray, samples: np.ndarray, h: float) -> np.ndarray:
    """log (1/M) Σ_j N(x; s_j, h² I) in 2-D by broadcasting, with a stable log-sum-exp."""
    out = []
    for block in np.array_split(x, max(1, len(x) // 256)):
        e = -np.sum((block[:, None, :] - samples[None]) ** 2, axis=-1) / (2 * h**2)
        top = e.max(axis=1)
        out.append(top + np.log(np.exp(e - top[:, None]).sum(axis=1)))
    return np.concatenate(out) - math.log(len(samples)) - math.log(2 * math.pi * h**2)


def np_grid(low: list[float], high: list[float], n: list[int]) -> tuple[np.ndarray, float]:
    """Cell centres of a box and the cell area (midpoint rule)."""
    axes = [
        lo + (np.arange(k) + 0.5) * (hi - lo) / k for lo, hi, k in zip(low, high, n, strict=True)
    ]
    mesh = np.meshgrid(*axes, indexing="ij")
    area = float(np.prod([(hi - lo) / k for lo, hi, k in zip(low, high, n, strict=True)]))
    return np.stack([m.ravel() for m in mesh], axis=1), area


def far_kernel_kl_qp_term(c: list[float], h: float, weight: float) -> float:
    """∫ r log(weight·r / p) for r = N(c, h² I), p = N(0, I) in 2-D, in closed form:
    log weight − log(2πe h²) + log 2π + (‖c‖² + 2h²)/2."""
    return (
        math.log(weight)
        - math.log(2 * math.pi * math.e * h**2)
        + math.log(2 * math.pi)
        + 0.5 * (sum(v * v for v in c) + 2 * h**2)
    )


def near_and_far_reference(
    near: np.ndarray,
    far: list[float],
    far_share: float,
    h: float,
    low: list[float],
    high: list[float],
) -> dict[str, float]:
    """Divergences between N(0, I) and q = (1 − a)·KDE(near) + a·N(far, h² I), a = far_share,
    the far kernel disjoint from both p and the near KDE: the near part by quadrature on a grid
    holding it (spacing ≤ h/2.5), the far part in closed form (it adds a·½ log 2 to JS)."""
    n = [math.ceil(2.5 * (hi - lo) / h) for lo, hi in zip(low, high, strict=True)]
    x, area = np_grid(low, high, n)
    log_p = np_log_standard(x)
    log_q = math.log(1 - far_share) + np_log_kde(x, near, h)
    p, q = np.exp(log_p), np.exp(log_q)
    log_m = np.logaddexp(log_p, log_q) - math.log(2)
    return {
        "kl_pq": float(np.sum(p * (log_p - log_q)) * area),
        "kl_qp": float(np.sum(q * (log_q - log_p)) * area)
        + far_share * far_kernel_kl_qp_term(far, h, far_share),
        "js": float(0.5 * np.sum(p * (log_p - log_m) + q * (log_q - log_m)) * area)
        + 0.5 * far_share * LOG2,
    }


# ----------------------------------------------------------------------- log q̂ at any distance


def test_kde_log_prob_skips_only_negligible_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    # clusters 1e5 apart and points both on them and far from every sample: the cells of samples
    # skipped for a group of points change log q̂ by < 1e-12 (against a numpy log-sum-exp over all)
    g = gen(9)
    centres = torch.tensor([[0.0, 0.0], [1e5, 0.0], [0.0, -1e5], [3e4, 7e4]], dtype=torch.float64)
    samples = (centres[:, None] + torch.randn(4, 300, 2, generator=g, dtype=torch.float64)).reshape(
        -1, 2
    )
    points = torch.cat(
        [
            samples[::7] + 0.05 * torch.randn(172, 2, generator=g, dtype=torch.float64),
            torch.tensor([[5e4, 5e4], [-2e5, 3.0], [1e5 + 40.0, 0.0]], dtype=torch.float64),
        ]
    )
    h = 0.2
    expected = np_log_kde(points.numpy(), samples.numpy(), h)
    sizes: list[int] = []
    sums = kde._log_kernel_sums
    monkeypatch.setattr(
        kde, "_log_kernel_sums", lambda x, s, b: sizes.append(len(s)) or sums(x, s, b)
    )
    monkeypatch.setattr(kde, "_CHUNK_ELEMENTS", 1000)  # the grouped path
    np.testing.assert_allclose(kde.kde_log_prob(points, samples, h).numpy(), expected, rtol=1e-12)
    assert min(sizes) < len(samples) / 3  # cells were skipped
    line = samples[:, :1] * 1e-3  # 1-D, clusters 100 apart
    expected_line = np_log_kde(
        np.concatenate([points[:, :1].numpy() * 1e-3, np.zeros((175, 1))], axis=1),
        np.concatenate([line.numpy(), np.zeros((1200, 1))], axis=1),
        h,
    ) + 0.5 * math.log(2 * math.pi * h**2)  # the 2-D helper's second axis adds −½ log 2πh²
    np.testing.assert_allclose(
        kde.kde_log_prob(points[:, :1] * 1e-3, line, h).numpy(), expected_line, rtol=1e-12
    )


# ------------------------------------------------------------------------------- far samples


@pytest.mark.parametrize("distance", [1e3, 1e5])
@pytest.mark.parametrize("bandwidth", [0.5, None])
def test_samples_far_away_match_the_closed_form(distance: float, bandwidth: float | None) -> None:
    # every sample at c: q̂ = N(c, h² I) exactly, whose divergences from N(0, I) have closed forms
    c = [distance / math.sqrt(2), -distance / math.sqrt(2)]
    out = kde_ground_truth(STANDARD, point_mass(c), pis=(0.5,), bandwidth=bandwidth)
    assert out["reliable"] is True and out["reason"] is None
    h2 = float(out["bandwidth"]) ** 2
    if bandwidth is None:  # Scott's h is 0: the narrowest kernel the data's grid resolves
        assert 0.0 < h2 < 0.1**2
    kl_qp = 0.5 * (2 * h2 + distance**2 - 2 - 2 * math.log(h2))
    kl_pq = 0.5 * (2 / h2 + distance**2 / h2 - 2 + 2 * math.log(h2))
    # KL(Q̂‖P) by Monte Carlo over q̂'s draws c + hε: log p varies by h‖c‖ε over them
    error = out["stderr"]["kl_qp"]
    assert 0 < error < 2e-4 * kl_qp
    assert abs(out["kl_qp"] - kl_qp) < 4 * error
    assert out["kl_pq"] == pytest.approx(kl_pq, rel=1e-6)
    assert out["js"] == pytest.approx(LOG2, abs=1e-9)
    assert out["js_pi_0.5"] == pytest.approx(LOG2, abs=1e-9)
    assert out["outside_box"] == pytest.approx(1.0)
    assert out["infinite"] == []


def test_samples_far_away_in_one_dimension() -> None:
    data = gaussian([0.0], [[1.0]])
    out = kde_ground_truth(data, torch.full((200, 1), -1e4), bandwidth=0.2)
    assert out["reliable"] is True
    h2, c2 = 0.04, 1e8
    error = out["stderr"]["kl_qp"]
    assert abs(out["kl_qp"] - 0.5 * (h2 + c2 - 1 - math.log(h2))) < 4 * error
    assert out["kl_pq"] == pytest.approx(0.5 * (1 / h2 + c2 / h2 - 1 + math.log(h2)), rel=1e-6)
    assert out["js"] == pytest.approx(LOG2, abs=1e-9)


def test_a_perfect_ring8_model_reads_the_cost_of_smoothing() -> None:
    # E q̂ = ring8 with each mode's std σ widened to √(σ² + h²): its divergences from ring8, by
    # quadrature, up to the KDE's sampling noise (within 2% over three seeds at 10⁴ samples)
    data = ring8()
    out = kde_ground_truth(data, data.sample(10_000, gen(10)))
    assert out["reliable"] is True and out["outside_box"] < 1e-6
    h = float(out["bandwidth"])
    sigma = data.length_scale()
    smoothed = Mixture.isotropic(data.weights, data.means, [math.hypot(sigma, h)] * 8)
    grid = make_grid([-3.0, -3.0], [3.0, 3.0], 1000)
    expected = ground_truth(data.log_prob(grid.points), smoothed.log_prob(grid.points), grid)
    assert expected["kl_pq"] == pytest.approx(0.193, abs=0.001)  # the README's numbers
    assert expected["kl_qp"] == pytest.approx(0.307, abs=0.001)
    for key in ("kl_pq", "kl_qp", "js"):
        assert out[key] == pytest.approx(expected[key], rel=0.05), key


@pytest.mark.parametrize("distance", [1e3, 1e5])
def test_a_tenth_of_the_samples_far_away(distance: float) -> None:
    # 900 samples of the data itself and 100 at c: q̂ = 0.9·KDE(near) + 0.1·N(c, h² I)
    h = 0.3
    near = STANDARD.sample(900, gen(1)).to(torch.float64)
    c = [0.6 * distance, 0.8 * distance]
    samples = torch.cat([near, point_mass(c, 100)])
    out = kde_ground_truth(STANDARD, samples, bandwidth=h, generator=gen(2))
    assert out["reliable"] is True
    expected = near_and_far_reference(near.numpy(), c, 0.1, h, [-8.0, -8.0], [8.0, 8.0])
    assert out["outside_box"] == pytest.approx(0.1, rel=1e-9)
    assert out["kl_pq"] == pytest.approx(expected["kl_pq"], rel=1e-6)
    # the far tenth's log q̂ − log p is drawn by Monte Carlo: within 4 of its standard errors
    assert abs(out["kl_qp"] - expected["kl_qp"]) <= 4 * out["stderr"]["kl_qp"] + 1e-6
    assert out["kl_qp"] == pytest.approx(expected["kl_qp"], rel=1e-3)
    assert out["kl_qp"] > 0.1 * 0.5 * distance**2 * 0.99  # the tenth's ½‖c‖², nothing dropped
    assert out["js"] == pytest.approx(expected["js"], abs=1e-7)
    assert out["js"] > 0.05 * LOG2


def test_kernels_straddling_the_box_match_quadrature_of_everything() -> None:
    # 950 samples of N((12, 0), I) straddle the box [−12, 12]² (half their kernels' mass lies
    # beyond it) and 50 sit at (300, 0), so the grid cannot widen to hold them: the part beyond
    # the box is Monte Carlo, checked against quadrature over a grid holding all the near mass
    h = 0.5
    near = STANDARD.sample(950, gen(3)).to(torch.float64) + torch.tensor([12.0, 0.0])
    c = [300.0, 0.0]
    samples = torch.cat([near, point_mass(c, 50)])
    out = kde_ground_truth(STANDARD, samples, bandwidth=h, generator=gen(4))
    assert out["reliable"] is True
    expected = near_and_far_reference(near.numpy(), c, 0.05, h, [-8.0, -8.0], [22.0, 8.0])
    # q̂'s exact mass beyond [−12, 12]², by math.erf
    phi = np.vectorize(lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2))))
    s = samples.numpy()
    inside = np.prod(phi((12.0 - s) / h) - phi((-12.0 - s) / h), axis=1)
    assert out["outside_box"] == pytest.approx(1 - inside.mean(), rel=1e-9)
    assert 0.4 < out["outside_box"] < 0.6
    for key in ("kl_pq", "kl_qp", "js"):
        error = out["stderr"][key]
        assert abs(out[key] - expected[key]) <= 4 * error + 1e-6 * abs(expected[key]), key
    assert out["stderr"]["kl_qp"] > 0  # the straddling kernels' terms vary
    assert out["stderr"]["kl_qp"] < 0.01 * out["kl_qp"]


# ----------------------------------------------------------------------------------- refusals


def assert_refused(out: dict, *words: str) -> None:
    assert out["method"] == "kde" and out["reliable"] is False
    assert all(out[key] is None for key in METRICS)
    for word in words:
        assert word in out["reason"], out["reason"]


def test_non_finite_samples_are_refused() -> None:
    samples = STANDARD.sample(2000, gen(5))
    samples[7, 0] = math.nan
    samples[11, 1] = math.inf
    out = kde_ground_truth(STANDARD, samples, pis=(0.5,))
    assert_refused(out, "2 of 2000", "not finite")
    assert out["n_samples"] == 2000


def test_too_few_samples_are_refused() -> None:
    samples = ring8().sample(MIN_SAMPLES[2], gen(6))
    assert kde_ground_truth(ring8(), samples, pis=(0.5,))["reliable"] is True
    out = kde_ground_truth(ring8(), samples[:-1], pis=(0.5,))
    assert_refused(out, f"{MIN_SAMPLES[2] - 1} samples are too few", "eval.num_samples")


def test_a_bandwidth_wider_than_the_data_is_refused() -> None:
    # ring8's modes are 0.014 wide: a kernel of 0.5 covers every mode from any one of them
    data = ring8()
    collapsed = data.sample(2000, gen(7))[:1].expand(2000, 2)
    out = kde_ground_truth(data, collapsed, pis=(0.5,), bandwidth=0.5)
    assert_refused(out, "length scale", "dropped mode")
    assert out["bandwidth"] == 0.5
    fine = kde_ground_truth(data, collapsed, pis=(0.5,), bandwidth=data.length_scale())
    assert fine["reliable"] is True and fine["js"] > 0.5  # one mode of eight: far from a fit


def test_a_grid_coarser_than_the_kernels_is_refused() -> None:
    samples = ring8().sample(2000, gen(8))
    out = kde_ground_truth(ring8(), samples, points=64, pis=(0.5,))
    assert_refused(out, "64 points per axis", "coarser than the bandwidth", "eval.grid_points")
    # a kernel narrower than the finest grid over the data's box (6/512 ≈ 0.0117)
    out = kde_ground_truth(ring8(), samples, pis=(0.5,), bandwidth=0.005)
    assert_refused(out, "512 points per axis", "coarser than the bandwidth 0.005")


def test_a_noisy_monte_carlo_term_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    near = STANDARD.sample(950, gen(3)).to(torch.float64) + torch.tensor([12.0, 0.0])
    samples = torch.cat([near, point_mass([300.0, 0.0], 50)])
    monkeypatch.setattr(kde, "_MC_RELATIVE_ERROR", 0.0)
    monkeypatch.setattr(kde, "_MC_ABSOLUTE_ERROR", 0.0)
    out = kde_ground_truth(STANDARD, samples, bandwidth=0.5, pis=(0.5,))
    assert_refused(out, "too noisy", "raise eval.num_samples")


def test_an_infinite_divergence_is_named() -> None:
    # Pearson χ²(P‖Q̂) = ∫ p²/q̂ − 1 with q̂ = N(c, h²) 1e5 away: beyond float64
    from gandiv.divergences import DIVERGENCES

    extra = {"objective_divergence": DIVERGENCES["pearson"]}
    out = kde_ground_truth(STANDARD, point_mass([1e5, 0.0]), extra=extra)
    assert out["reliable"] is True
    assert out["infinite"] == ["objective_divergence"]
    assert math.isinf(out["objective_divergence"])


# ------------------------------------------------------------------ diverged runs, end to end

EVAL = ["eval.critic.divergences=[js]", "eval.critic.steps=20", "eval.num_samples=2000"]


def test_eval_of_a_diverged_fgan_run_reports_the_divergence(gandiv, tmp_path: Path) -> None:
    # the run: f-GAN with Pearson χ² on ring8 diverges within 40 steps (at the shared
    # trainer settings and with an unbounded critic, which the game's own defaults no longer use)
    args = ["objective=fgan", "objective.divergence=pearson", "model=mlp", "dataset=ring8"]
    args += [*SHARED_SETTINGS, "objective.log_ratio_bound=null"]
    assert gandiv("train", *args, *TINY, "plot.every=0").code == 0
    run = only_run(tmp_path)
    samples = np.load(run / "samples.npy")
    assert np.median(np.linalg.norm(samples, axis=1)) > 10, "the run did not diverge"
    result = gandiv("eval", f"run={run}", *EVAL)
    assert result.code == 0, result.err
    truth = read_json(run / "eval.json")["ground_truth"]
    assert truth["method"] == "kde" and truth["reliable"] is True
    assert truth["js"] == pytest.approx(LOG2, abs=1e-6)
    # KL(Q̂‖P) ≈ E[−log p] over the model's samples: independent of the eval's own draws to the
    # spread of −log p over them (a factor of 2 here; before the fix it was 1e-23)
    log_p = ring8().log_prob(torch.from_numpy(samples).to(torch.float64))
    assert truth["kl_qp"] == pytest.approx(float(-log_p.mean()), rel=0.5)
    assert truth["kl_qp"] > 1e6 and truth["kl_pq"] > 1e6
    assert truth["outside_box"] == pytest.approx(1.0)


def shift_generator(run: Path, shift: float) -> None:
    """Add `shift` to the generator's output bias in the run's checkpoint (samples move by it)."""
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=False)
    state["model"]["net.6.bias"] += shift
    torch.save(state, path)


def test_eval_of_a_generator_moved_far_away(gandiv, tmp_path: Path) -> None:
    args = ["objective=gan", "model=mlp", "dataset=ring8"]
    assert gandiv("train", *args, *TINY, "plot.every=0").code == 0
    run = only_run(tmp_path)
    samples = torch.from_numpy(np.load(run / "samples.npy")).to(torch.float64)
    shift_generator(run, 1e5)
    result = gandiv("eval", f"run={run}", *EVAL)
    assert result.code == 0, result.err
    truth = read_json(run / "eval.json")["ground_truth"]
    assert truth["reliable"] is True and truth["js"] == pytest.approx(LOG2, abs=1e-9)
    # every sample moved by (1e5, 1e5): −log p(s) ≈ ‖s − μ‖²/2σ² varies by < 1e-4 over them,
    # so the mean over the run's own samples (shifted alike) is KL(Q̂‖P) to its O(10) entropy
    log_p = ring8().log_prob(samples + 1e5)
    assert truth["kl_qp"] == pytest.approx(float(-log_p.mean()), rel=1e-3)


def test_eval_of_a_generator_with_nan_parameters_refuses(gandiv, tmp_path: Path) -> None:
    # a diverged generator is refused before anything is drawn from it (exit 3, as training
    # reports divergence), not evaluated into all-null metrics
    assert gandiv("train", "objective=gan", "model=mlp", *TINY, "plot.every=0").code == 0
    run = only_run(tmp_path)
    shift_generator(run, math.nan)
    result = gandiv("eval", f"run={run}", *EVAL)
    assert result.code == 3, result.err
    assert "parameters are non-finite" in result.err and "model.net.6.bias" in result.err
    assert result.err.count("\n") == 1 and not (run / "eval.json").exists()
