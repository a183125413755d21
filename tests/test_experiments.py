"""The preset experiments reproduce the sources' findings (through the real command)."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from .conftest import read_json, run_dirs


def _sweep(gandiv, tmp_path: Path, *args: str) -> tuple[Path, list[dict[str, str]]]:
    result = gandiv("train", "-m", *args)
    assert result.code == 0, result.err
    (root,) = tmp_path.glob("multirun/*/*")
    with open(root / "sweep.csv") as handle:
        return root, list(csv.DictReader(handle))


def _by(rows: list[dict[str, str]], key: str) -> dict[str, dict[str, str]]:
    return {row[key]: row for row in rows}


def _check_fgan_table(root: Path, divergences: list[str]) -> None:
    with open(root / "table.csv") as handle:
        table = _by(list(csv.DictReader(handle)), "divergence")
    assert (
        "| divergence | direct_mu | direct_sigma | direct_D_f |" in (root / "table.md").read_text()
    )
    for name in divergences:
        row = table[name]
        assert abs(float(row["adversarial_mu"]) - float(row["direct_mu"])) < 0.1, row
        assert abs(float(row["adversarial_sigma"]) - float(row["direct_sigma"])) < 0.1, row
        # the direct fit is the optimum of D_f: the adversarial fit cannot do better
        assert float(row["adversarial_D_f"]) >= float(row["direct_D_f"]) - 1e-4, row


def test_fgan_mixture_preset_adversarial_fits_match_the_direct_optimum(gandiv, tmp_path):
    root, rows = _sweep(gandiv, tmp_path, "+experiment=fgan_mixture", "objective.divergence=kl,js")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    _check_fgan_table(root, ["kl", "js"])


@pytest.mark.slow
def test_fgan_mixture_preset_for_every_required_divergence(gandiv, tmp_path):
    root, rows = _sweep(gandiv, tmp_path, "+experiment=fgan_mixture")
    assert len(rows) == 14  # seven divergences × (direct, fgan)
    _check_fgan_table(root, ["kl", "reverse_kl", "pearson", "squared_hellinger", "js"])


@pytest.mark.slow  # (the defaults' own mode seeking is tested fast above)
def test_raffel_presets_cover_versus_seek_modes(gandiv, tmp_path):
    """Forward KL covers both modes; reverse KL, with p or with samples only, sits on one."""
    _, rows = _sweep(
        gandiv,
        tmp_path,
        "+experiment=raffel_forward_kl,raffel_reverse_kl,raffel_reverse_kl_fgan",
    )
    fits = _by(rows, "experiment")
    forward = fits["raffel_forward_kl"]
    assert float(forward["kl_pq"]) < 1.0 and float(forward["kl_qp"]) > 1.0
    for name in ("raffel_reverse_kl", "raffel_reverse_kl_fgan"):
        # on one of two equal, well-separated components KL(Q‖P) = log 2, and half of P is missed
        assert float(fits[name]["kl_qp"]) == pytest.approx(math.log(2), abs=0.05), name
        assert float(fits[name]["kl_pq"]) > 5 * float(forward["kl_pq"]), name


def _max_error_to_ideal(summary: dict) -> float:
    """The largest error of a Gaussian fit in any mean or standard deviation against its ideal."""
    fit, ideal = summary["params"], summary["ideal"]["params"]
    means = np.abs(np.asarray(fit["mean"]) - np.asarray(ideal["mean"]))
    stds = np.abs(np.sqrt(np.diag(fit["cov"])) - np.sqrt(np.diag(ideal["cov"])))
    return float(max(means.max(), stds.max()))


@pytest.mark.parametrize(
    "objective",
    [
        ["objective=logit_gan"],
        ["objective=reverse_kl_fgan"],
        # Poole et al.'s step on the GAN's classifier critic, told to descend KL(Q‖P) (the same
        # critic's own minimax step covers: JS)
        ["objective=gan", "objective.generator=ratio", "objective.divergence=reverse_kl"],
    ],
    ids=["logit_gan", "reverse_kl_fgan", "gan_ratio_reverse_kl"],
)
def test_the_reverse_kl_games_pick_a_mode_at_their_defaults(gandiv, tmp_path, objective):
    """At its own defaults (no other flags) each game that targets KL(Q‖P) ends on its ideal, the
    heavy component of the default mixture: the shared maximum-likelihood settings (one critic
    step, learning rate 0.01, β₁ = 0.9) covered both modes or ended NaN."""
    result = gandiv("train", *objective, "plot.every=0")
    assert result.code == 0, result.err
    summary = read_json(run_dirs(tmp_path)[0] / "summary.json")
    assert summary["ideal"]["divergence"] == "reverse_kl"
    assert _max_error_to_ideal(summary) < 0.1, (summary["params"], summary["ideal"]["params"])
    assert summary["kl_qp"] < summary["kl_pq"] - 0.3  # mode seeking
    assert summary["health"]["status"] == "ok", summary["health"]


@pytest.mark.slow
def test_the_poole_preset_covers_for_kl_and_seeks_a_mode_for_reverse_kl(gandiv, tmp_path):
    """One critic (a classifier), two model steps: the reverse KL fit lands on its ideal (one
    mode), the forward KL fit spreads over both modes; where a fit ends short of its ideal (the
    covering targets crawl in some seeds: docs/fidelity.md), run health says so."""
    root, rows = _sweep(
        gandiv, tmp_path, "+experiment=poole_ratio", "objective.divergence=kl,reverse_kl"
    )
    assert {r["status"] for r in rows} == {"ok"}
    summaries = {
        summary["ideal"]["divergence"]: summary
        for summary in map(read_json, root.glob("*/summary.json"))
    }
    forward, reverse = summaries["kl"], summaries["reverse_kl"]
    assert _max_error_to_ideal(reverse) < 0.1, (reverse["params"], reverse["ideal"])
    assert reverse["health"]["status"] == "ok", reverse["health"]
    assert forward["kl_pq"] < reverse["kl_pq"] - 0.2 and reverse["kl_qp"] < forward["kl_qp"] - 0.2
    if forward["ideal"]["gap"] > 0.1:
        assert forward["health"]["status"] != "ok", forward["health"]


@pytest.mark.slow
def test_least_squares_minimax_step_lands_on_the_triangular_ideal_and_maos_step_does_not(
    gandiv, tmp_path
):
    """The least-squares critic's bound is the triangular discrimination; the step that descends
    the bound lands on its ideal, Mao et al.'s step (a different first variation) ends elsewhere."""
    root, rows = _sweep(
        gandiv,
        tmp_path,
        "objective=lsgan",
        "objective.generator=minimax,least_squares",
        "plot.every=0",
    )
    assert {r["status"] for r in rows} == {"ok"}
    summaries = [read_json(p) for p in root.glob("*/summary.json")]
    minimax = next(s for s in summaries if s["ideal"].get("divergence") == "triangular")
    assert _max_error_to_ideal(minimax) < 0.1, (minimax["params"], minimax["ideal"])
    mao = next(s for s in summaries if s["ideal"].get("divergence") is None)
    # (measured: Mao's step narrows onto the heavy component, σ_x ≈ 1.15 against Δ's 1.72)
    assert _max_error_to_ideal({"params": mao["params"], "ideal": minimax["ideal"]}) > 0.2


def test_the_slowest_fgan_row_lands_on_its_ideal_at_its_defaults(gandiv, tmp_path):
    """Pearson χ² travels furthest of the f-GAN rows (its ideal on the default mixture is wide and
    off-centre, reached through ratio-weighted, noisy gradients): at objective=fgan's own defaults
    (a faster model, 4,000 steps, cosine-decaying rates) it ends within 0.1 of its ideal. At the
    shared settings it ends far off; at a constant rate it jitters about the tolerance."""
    result = gandiv("train", "objective=fgan", "objective.divergence=pearson", "plot.every=0")
    assert result.code == 0, result.err
    summary = read_json(run_dirs(tmp_path)[0] / "summary.json")
    assert summary["ideal"]["divergence"] == "pearson"
    assert _max_error_to_ideal(summary) < 0.1, (summary["params"], summary["ideal"]["params"])
    assert summary["health"]["status"] == "ok", summary["health"]


@pytest.mark.slow
def test_logit_gan_seeks_a_mode_and_the_gans_lie_between(gandiv, tmp_path):
    _, rows = _sweep(
        gandiv,
        tmp_path,
        "+experiment=raffel_forward_kl",
        "objective=forward_kl,gan,ns_gan,logit_gan",
    )
    fits = _by(rows, "objective")
    forward, logit = fits["forward_kl"], fits["logit_gan"]
    assert float(logit["kl_qp"]) == pytest.approx(math.log(2), abs=0.05)
    for name in ("gan", "ns_gan"):
        for key in ("kl_pq", "kl_qp"):
            low, high = sorted((float(forward[key]), float(logit[key])))
            slack = max(0.05, 0.02 * high)  # fits on the same mode differ by estimation noise
            assert low - slack <= float(fits[name][key]) <= high + slack, (name, key)


def test_mmd_fit_of_a_gaussian_recovers_its_mean_and_covariance(gandiv, tmp_path):
    result = gandiv(
        "train",
        "dataset=gaussian",
        "objective=mmd",
        "trainer.batch_size=256",
        "trainer.steps=800",
        "trainer.eval_every=0",
    )
    assert result.code == 0, result.err
    summary = read_json(run_dirs(tmp_path)[0] / "summary.json")
    assert np.abs(np.array(summary["params"]["mean"]) - [1.0, -0.5]).max() < 0.1
    assert np.abs(np.array(summary["params"]["cov"]) - [[1.0, 0.8], [0.8, 1.0]]).max() < 0.1


def _check_pi_trend(rows: list[dict[str, str]]) -> None:
    """As π grows JS_π's ideal moves from covering (low KL(P‖Q)) to mode seeking (low KL(Q‖P)),
    and each fit follows its own π's ideal."""
    rows = sorted(rows, key=lambda r: float(r["objective.pi"]))
    for key, sign in (("kl_pq", 1), ("kl_qp", -1)):
        ideal = [float(r[f"ideal_{key}"]) for r in rows]
        achieved = [float(r[key]) for r in rows]
        assert all(sign * (b - a) > 0 for a, b in itertools.pairwise(ideal)), (key, ideal)
        moved = sign * (ideal[-1] - ideal[0])
        assert moved > 0.2, (key, ideal)
        # each fit near its ideal, and the fits' move most of the ideals' one beyond that noise
        assert max(abs(a - i) for a, i in zip(achieved, ideal, strict=True)) < 0.1, (
            key,
            achieved,
            ideal,
        )
        assert sign * (achieved[-1] - achieved[0]) > 0.5 * moved, (key, achieved, ideal)


def test_js_pi_moves_from_covering_to_mode_seeking_as_pi_grows_at_its_defaults(gandiv, tmp_path):
    _, rows = _sweep(gandiv, tmp_path, "objective=js_pi", "objective.pi=0.1,0.9", "plot.every=0")
    _check_pi_trend(rows)


@pytest.mark.slow
def test_huszar_pi_sweep_preset(gandiv, tmp_path):
    _, rows = _sweep(gandiv, tmp_path, "+experiment=huszar_pi_sweep")
    assert [float(r["objective.pi"]) for r in rows] == [0.1, 0.3, 0.5, 0.7, 0.9]
    _check_pi_trend(rows)


def test_a_learning_rate_that_reaches_only_the_model_is_said(gandiv, tmp_path):
    """fgan's defaults give the critic its own rate: trainer.lr then moves the model's only, and
    the log says so; with trainer.lr_d set too it says nothing."""
    for run, extra in (("one", []), ("both", ["trainer.lr_d=0.001"])):
        args = ["objective=fgan", "trainer.lr=0.001", *extra, "trainer.steps=2", "plot.every=0"]
        result = gandiv("train", *args, f"hydra.run.dir={run}")
        assert result.code == 0, result.err
    said = "trainer.lr=0.001 sets the model's learning rate only: objective=fgan gives its critic"
    assert said in (tmp_path / "one" / "train.log").read_text()
    assert "learning rate only" not in (tmp_path / "both" / "train.log").read_text()


@pytest.mark.slow
def test_the_pacgan_preset_sweeps_packing_with_the_mode_metrics(gandiv, tmp_path):
    """A reduced PacGAN sweep (2 packings × 1 seed, few steps): sweep.csv has the mode columns."""
    reduced = ("objective.packing=1,4", "trainer.seed=0", "trainer.steps=40")
    _, rows = _sweep(gandiv, tmp_path, "+experiment=pacgan", *reduced)
    assert sorted(row["objective.packing"] for row in rows) == ["1", "4"]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["modes_n_modes"] == "8"
        for key in ("modes_covered", "modes_high_quality", "modes_hist_js"):
            assert row[key] != "", (key, row)
