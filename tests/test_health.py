"""Run health (README: "Run health"): each symptom on synthetic records, parameters and samples, the
healthy cases that must stay quiet, and end to end through the real command."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gandiv.sweep import health_label
from gandiv.training.health import (
    FAR_SHARE,
    FROZEN_CHANGE,
    SPIKE_FACTOR,
    RunSettings,
    assess,
    parameter_change,
    warning_line,
)

from .conftest import SHARED_SETTINGS, TINY, only_run, read_json

ADVERSARIAL = RunSettings(
    objective="fgan",
    adversarial=True,
    lr_g=0.01,
    lr_d=0.01,
    steps=1000,
    batch_size=512,
    critic_steps=1,
    spectral_norm=False,
    gradient_penalty=0.0,
    noise="none",
    generator="minimax",
    divergence="pearson",
)
DENSITY = RunSettings(
    objective="forward_kl", adversarial=False, lr_g=0.01, steps=1000, batch_size=512
)
BOX = np.array([[-2.0, 2.0], [-1.0, 1.0]])


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _likelihood_records(n: int = 100) -> list[dict[str, float]]:
    """A healthy maximum-likelihood run: the loss falls from 4.5 to about 3.2 with noise, the
    ground truth falls, evaluated every 10th record."""
    rng = _rng()
    records: list[dict[str, float]] = []
    for i in range(n):
        record = {"step": 10 * (i + 1), "loss": 3.2 + 1.3 * math.exp(-i / 5) + 0.05 * rng.normal()}
        if i % 10 == 0:
            record |= {"kl_pq": 0.66 + 1.5 * math.exp(-i / 5), "kl_qp": 1.7 + math.exp(-i / 5)}
        records.append(record)
    return records


def _gan_records(n: int = 100) -> list[dict[str, float]]:
    """A healthy GAN: the critic's loss and bound fluctuate (by a factor of a few, through 0)."""
    rng = _rng()
    records = []
    for i in range(n):
        bound = 0.3 * rng.normal() + 0.05 * math.sin(i)
        records.append(
            {"step": 10 * (i + 1), "critic_loss": -bound, "bound": bound, "loss": 3 * rng.normal()}
        )
    return records


def _inside(n: int = 2000) -> np.ndarray:
    return _rng().uniform(BOX[:, 0], BOX[:, 1], size=(n, 2)).astype(np.float32)


def _names(health: dict) -> list[str]:
    return [s["name"] for s in health["symptoms"]]


# ------------------------------------------------------------------------------------------------
# healthy runs stay quiet
@pytest.mark.parametrize(
    ("records", "settings"), [(_likelihood_records(), DENSITY), (_gan_records(), ADVERSARIAL)]
)
def test_healthy_runs_are_ok(records, settings):
    health = assess(records, settings, change=0.3, samples=_inside(), box=BOX, gap=0.02)
    assert health["status"] == "ok" and health["symptoms"] == [] and health["advice"] is None
    assert warning_line(health) is None
    json.dumps(health)  # summary.json takes it as it is


def test_an_image_run_without_a_box_or_a_gap_skips_those_checks():
    health = assess(_gan_records(), ADVERSARIAL, change=0.1, samples=None, box=None, gap=None)
    assert health["status"] == "ok"
    assert set(health["skipped"]) == {"samples_left_data", "gap_to_ideal"}


def test_a_loss_near_zero_is_measured_against_the_floor_not_its_own_tiny_median():
    """A converged bound of ±1e-3 that moves to 0.5 did not spike (0.5 nat is no blow-up)."""
    records = [{"step": i, "bound": 1e-3 * (-1) ** i} for i in range(50)] + [{"bound": 0.5}]
    assert assess(records, ADVERSARIAL)["status"] == "ok"


def test_a_loss_falling_by_orders_of_magnitude_is_no_spike():
    records = [{"step": i, "loss": 1e6 * 10.0 ** (-i / 10)} for i in range(80)]
    assert assess(records, DENSITY)["status"] == "ok"


def test_a_healthy_spread_of_samples_a_little_outside_the_box_is_ok():
    """A mode-covering fit: some samples outside the box, none a box diagonal away; and a
    half-trained generator's few stragglers (below FAR_SHARE)."""
    samples = _inside()
    samples[:200] *= 1.5  # 10% outside, at most half the box's size away
    health = assess(_likelihood_records(), DENSITY, samples=samples, box=BOX)
    assert health["status"] == "ok" and health["measured"]["far_share"] == 0.0
    samples[-100:] = 50.0  # 5% far away
    health = assess(_likelihood_records(), DENSITY, samples=samples, box=BOX)
    assert health["status"] == "ok" and health["measured"]["far_share"] == pytest.approx(0.05)


# ------------------------------------------------------------------------------------------------
# each symptom triggers
def test_a_spike_of_the_critic_loss_is_flagged():
    records = _gan_records()
    records[60]["critic_loss"] = 3e4
    health = assess(records, ADVERSARIAL, change=0.3, samples=_inside(), box=BOX)
    assert _names(health) == ["loss_spike"]
    (spike,) = health["symptoms"]
    assert spike["value"] > SPIKE_FACTOR and "critic_loss" in spike["detail"]
    assert "step 610" in spike["detail"]


def test_a_loss_that_grew_slowly_by_orders_of_magnitude_is_a_spike_too():
    """The running median keeps the scale of the healthy start (a slow blow-up counts)."""
    records = [{"step": i, "critic_loss": 1.0 + (i > 50) * 20.0 * (i - 50)} for i in range(100)]
    assert _names(assess(records, ADVERSARIAL)) == ["loss_spike"]


def test_samples_far_from_the_data_are_flagged():
    samples = _inside()
    samples[: int(3 * FAR_SHARE * len(samples))] = 1e5
    health = assess(_gan_records(), ADVERSARIAL, change=0.3, samples=samples, box=BOX)
    assert _names(health) == ["samples_left_data"]
    assert health["symptoms"][0]["value"] == pytest.approx(3 * FAR_SHARE)


def test_non_finite_samples_count_as_far():
    samples = _inside()
    samples[: int(2 * FAR_SHARE * len(samples))] = np.nan
    health = assess(_gan_records(), ADVERSARIAL, samples=samples, box=BOX)
    assert _names(health) == ["samples_left_data"]


def test_a_median_distance_in_box_diagonals_is_reported():
    samples = np.full((100, 2), 0.0) + np.array([2.0 + 4 * math.sqrt(5), 0.0])  # 2 diagonals
    health = assess([], DENSITY, samples=samples, box=BOX)
    assert health["measured"]["median_distance"] == pytest.approx(2.0)
    assert "median distance 2 diagonals" in health["symptoms"][0]["detail"]


def test_parameter_change_is_relative_to_the_parameters_norm():
    start = {"w": torch.ones(10, 10), "b": torch.zeros(10)}
    assert parameter_change(start, {k: v.clone() for k, v in start.items()}) == 0.0
    moved = {"w": torch.ones(10, 10) * 1.01, "b": torch.zeros(10)}
    assert parameter_change(start, moved) == pytest.approx(0.01)
    zero = {"b": torch.zeros(3)}
    assert parameter_change(zero, {"b": torch.zeros(3)}) == 0.0
    assert parameter_change(zero, {"b": torch.full((3,), 1e-3)}) == math.inf


def test_parameters_that_never_moved_are_flagged_and_a_huge_loss_explained():
    records = [{"step": 10 * i, "loss": 6.5e21} for i in range(1, 101)]
    health = assess(records, DENSITY, change=0.0)
    assert _names(health) == ["parameters_frozen"]
    assert "Adam" in health["symptoms"][0]["detail"]
    assert assess(records, DENSITY, change=10 * FROZEN_CHANGE)["status"] == "ok"
    assert _names(assess(records, DENSITY, change=FROZEN_CHANGE / 10)) == ["parameters_frozen"]


def test_no_step_taken_means_no_frozen_check():
    health = assess([], DENSITY, change=None)
    assert health["status"] == "ok" and "parameters_frozen" in health["skipped"]


def test_a_target_divergence_that_gave_back_its_progress_is_flagged():
    """The f-GAN total-variation game of issue 18: TV 0.777 → 0.511 → 0.688 (kl_qp meanwhile
    1.65 → 22) while the losses look calm."""
    values = [0.777, 0.511, 0.539, 0.576, 0.599, 0.613, 0.629, 0.649, 0.659, 0.684, 0.688]
    records = [{"step": 100 * i, "objective_divergence": v} for i, v in enumerate(values)]
    health = assess(records, ADVERSARIAL)
    assert _names(health) == ["diverged"]
    (symptom,) = health["symptoms"]
    assert "objective_divergence" in symptom["detail"] and "step 100" in symptom["detail"]
    assert symptom["value"] == pytest.approx((0.688 - 0.511) / (0.777 - 0.511))


def test_a_target_that_gave_back_little_or_only_other_divergences_that_grew_are_ok():
    """Wobbles below 0.1 or below half the progress stay quiet; so does a mode-seeking fit's
    KL(P‖Q), which rightly grows while its target KL(Q‖P) falls."""
    wobble = [{"step": i, "objective_divergence": v} for i, v in enumerate([0.25, 0.17, 0.24])]
    halfway = [{"step": i, "objective_divergence": v} for i, v in enumerate([3.4, 1.6, 2.3])]
    seeking = [
        {"step": i, "objective_divergence": q, "kl_qp": q, "kl_pq": p}
        for i, (q, p) in enumerate([(3.4, 2.2), (1.0, 0.7), (0.7, 9.0)])
    ]
    negative = [{"step": i, "objective_divergence": v} for i, v in enumerate([-0.54, -1.02, -1.0])]
    for records in (wobble, halfway, seeking, negative):
        assert assess(records, ADVERSARIAL)["status"] == "ok", records
    worse_than_at_start = [{"step": i, "objective_divergence": v} for i, v in enumerate([1, 1, 2])]
    assert _names(assess(worse_than_at_start, DENSITY)) == ["diverged"]


def test_spread_divergences_under_an_annealed_sigma_are_not_compared():
    """With σ annealed from large to small, KL(P̃‖Q̃) grows as σ shrinks while the fit improves."""
    records = [
        {"step": i, "spread_objective_divergence": v} for i, v in enumerate([0.05, 0.02, 0.4])
    ]
    assert _names(assess(records, DENSITY)) == ["diverged"]  # (at one σ, it would be)
    health = assess(records, DENSITY, annealed=True)
    assert health["status"] == "ok" and "diverged (spread_)" in health["skipped"]


def test_a_large_gap_to_the_ideal_is_flagged():
    assert assess([], DENSITY, gap=0.05)["status"] == "ok"
    health = assess([], DENSITY, gap=0.5)
    assert _names(health) == ["gap_to_ideal"] and health["symptoms"][0]["value"] == 0.5
    assert assess([], DENSITY, gap=0.5, gap_tolerance=1.0)["status"] == "ok"


# ------------------------------------------------------------------------------------------------
# advice and the warning line
def test_the_advice_depends_on_the_objective_family():
    records = _gan_records()
    records[60] |= {"critic_loss": 3e4, "loss": 3e4}
    adversarial = assess(records, ADVERSARIAL)["advice"]
    density = assess(records, DENSITY)["advice"]
    assert "critic.spectral_norm=true" in adversarial and "trainer.critic_steps=5" in adversarial
    assert "critic" not in density and "trainer.lr=0.001" in density
    assert "trainer.batch_size=1024" in density


def test_the_advice_leaves_out_what_the_run_already_does():
    settings = RunSettings(
        objective="fgan",
        adversarial=True,
        lr_g=0.002,
        lr_d=0.004,
        shared_lr=False,
        critic_steps=5,
        spectral_norm=True,
        gradient_penalty=10.0,
    )
    health = assess([{"critic_loss": 1.0}, {"critic_loss": 1e4}], settings)
    assert health["advice"] == "try, one at a time: trainer.lr_g=0.0002, trainer.lr_d=0.0004"


def test_the_warning_line_names_every_symptom_and_the_advice():
    samples = np.full((100, 2), 1e5, dtype=np.float32)
    records = _gan_records()
    records[60]["critic_loss"] = 3e4
    health = assess(records, ADVERSARIAL, change=0.0, samples=samples, box=BOX, gap=1.0)
    assert set(_names(health)) == {
        "loss_spike",
        "samples_left_data",
        "parameters_frozen",
        "gap_to_ideal",
    }
    line = warning_line(health)
    assert line is not None and "\n" not in line
    assert line.startswith("unhealthy run: ")
    for phrase in ("loss spiked", "samples left the data's region", "never moved", "ideal"):
        assert phrase in line
    assert health["advice"] in line and "objective.generator=nonsaturating" in line


def test_a_sweep_cell_says_ok_or_warning_with_the_symptoms():
    assert health_label({"status": "ok", "symptoms": []}) == "ok"
    health = {"status": "warning", "symptoms": [{"name": "loss_spike"}, {"name": "diverged"}]}
    assert health_label(health) == "warning: loss_spike diverged"


# ------------------------------------------------------------------------------------------------
# end to end through the real command
def _last_log_line(run: Path) -> str:
    return (run / "train.log").read_text().strip().splitlines()[-1]


def test_the_default_run_is_healthy(gandiv, tmp_path):
    result = gandiv("train", "plot.every=0")  # the defaults: it ends on its ideal
    assert result.code == 0, result.err
    run = only_run(tmp_path)
    health = read_json(run / "summary.json")["health"]
    assert health["status"] == "ok" and health["symptoms"] == []
    assert health["measured"]["parameter_change"] > FROZEN_CHANGE
    assert health["measured"]["gap"] < 0.01
    assert "[INFO] - done: 1000 steps" in _last_log_line(run)


def test_a_frozen_run_completes_with_a_warning_as_its_last_line(gandiv, tmp_path):
    """A learning rate of 1e-12: no step moves the parameters, and the fit stays far from its
    ideal: exit 0, both symptoms named in the summary and in the log's last line."""
    result = gandiv("train", "trainer.lr=1e-12", *TINY)
    assert result.code == 0, result.err
    run = only_run(tmp_path)
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed"
    assert summary["health"]["status"] == "warning"
    assert _names(summary["health"]) == ["parameters_frozen", "gap_to_ideal"]
    assert summary["health"]["measured"]["gap"] == pytest.approx(summary["ideal"]["gap"])
    last = _last_log_line(run)
    assert "[WARNING] - unhealthy run: the parameters never moved" in last
    assert "trainer.lr" in last


def test_an_adversarial_run_blown_up_on_purpose_warns_and_its_sweep_row_says_so(gandiv, tmp_path):
    """The f-GAN Pearson game of an mlp on ring8 under a large learning rate flies off within 40
    steps: exit 0, a warning as its log's last line, and the sweep's table and last line name the
    unhealthy job. Both jobs train as one vectorised group (the group's finish path)."""
    game = ["objective=fgan", "objective.divergence=pearson", "model=mlp", "dataset=ring8"]
    sweep = ["-m", "hydra.sweep.dir=sw", "hydra/launcher=vectorized", "hydra.launcher.max_group=0"]
    shared = [o for o in SHARED_SETTINGS if not o.startswith("trainer.lr=")]
    game += [*shared, "objective.log_ratio_bound=null"]  # the game as it was
    result = gandiv("train", *sweep, *game, "trainer.lr=0.001,0.1", *TINY)
    assert result.code == 0, result.err
    assert "training 2 runs as one vectorised group" in result.out
    healthy, blown = tmp_path / "sw" / "0", tmp_path / "sw" / "1"
    assert read_json(healthy / "summary.json")["health"]["status"] == "ok"
    summary = read_json(blown / "summary.json")
    assert summary["status"] == "completed" and summary["health"]["status"] == "warning"
    assert "samples_left_data" in _names(summary["health"])
    assert "[WARNING] - unhealthy run: " in _last_log_line(blown)
    assert "objective.gradient_penalty=10" in _last_log_line(blown)
    with open(tmp_path / "sw" / "sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["health"] == "ok" and rows[1]["health"].startswith("warning: ")
    assert "samples_left_data" in rows[1]["health"]
    assert "jobs completed with health warnings: 1 (warning: " in result.out.splitlines()[-1]
