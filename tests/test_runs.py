"""End-to-end runs of the real command: the run directory contract, resume, eval, figures.

Faults (kills, signals, full disks, NaN/Inf, concurrent runs), determinism and bad input are in
tests/reliability/.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import (
    TINY,
    digest,
    final_model_state,
    metrics_without_time,
    only_run,
    read_json,
    run_cli,
    run_dirs,
)

RUN_FILES = [
    "figures/density.png",
    "figures/curves.png",
    "animation.gif",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    ".hydra/hydra.yaml",
    "train.log",
    "metrics.jsonl",
    "summary.json",
    "checkpoints/last.pt",
    "samples.npy",
]


def test_default_run_through_the_real_command(tmp_path):
    """`gandiv train` with no overrides: the README's main job, in a fresh directory."""
    proc = run_cli("train", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = only_run(tmp_path)
    assert re.fullmatch(
        r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-\d{6}", str(run.relative_to(tmp_path / "outputs"))
    )
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["steps"] == 1000
    for key in ("wall_time_s", "steps_per_s", "kl_pq", "kl_qp", "js"):
        assert isinstance(summary[key], float) and summary[key] >= 0, key
    mean, cov = np.array(summary["params"]["mean"]), np.array(summary["params"]["cov"])
    assert mean.shape == (2,) and cov.shape == (2, 2)
    samples = np.load(run / "samples.npy")
    assert samples.shape == (10_000, 2) and samples.dtype == np.float32
    # The samples come from the fitted Gaussian.
    assert np.allclose(samples.mean(0), mean, atol=0.1)
    assert np.allclose(np.cov(samples.T), cov, atol=0.25)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 1000
    assert all(line["step"] % 10 == 0 for line in lines)
    evals = [line for line in lines if "kl_pq" in line]
    assert [e["step"] for e in evals] == list(range(0, 1001, 100))
    assert evals[-1]["kl_pq"] < evals[0]["kl_pq"]  # maximum likelihood lowered KL(P||Q)
    assert "done: 1000 steps" in (run / "train.log").read_text()


def test_flow_maximum_likelihood_through_the_real_command(tmp_path):
    proc = run_cli(
        "train",
        "model=flow",
        "model.depth=4",
        "model.width=32",
        "trainer.lr=0.003",
        *TINY,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    run = only_run(tmp_path)
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    summary = read_json(run / "summary.json")
    assert summary["model"] == "flow" and summary["steps"] == 40 and summary["params"] == {}
    evals = [line for line in metrics_without_time(run) if "kl_pq" in line]
    assert evals[-1]["kl_pq"] < evals[0]["kl_pq"]


@pytest.mark.parametrize(
    "objective",
    [
        # every step draws a batch, model noise and the critic's fakes from the training
        # generator: a resume that did not restore its state (or the data splits') would differ
        ["objective=gan", "trainer.critic_steps=2"],
        ["objective=direct", "objective.divergence=js"],  # (quadrature: no draws at all)
    ],
    ids=["gan", "direct"],
)
def test_resume_extends_a_run_exactly(gandiv, tmp_path, objective):
    args = [*objective, "trainer.checkpoint_every=7", *TINY]
    assert gandiv("train", *args, "trainer.steps=80").code == 0
    straight = run_dirs(tmp_path)[0]
    # Ending on the log and eval cadences, so the finished short run logged what the long one did.
    assert gandiv("train", *args, "trainer.steps=60").code == 0
    short = run_dirs(tmp_path)[1]
    result = gandiv("train", f"resume={short}", "trainer.steps=80")
    assert result.code == 0, result.err
    assert len(run_dirs(tmp_path)) == 2  # continued in place
    assert metrics_without_time(short) == metrics_without_time(straight)
    for key, value in final_model_state(straight).items():
        assert torch.equal(value, final_model_state(short)[key]), key
    assert read_json(short / "summary.json")["steps"] == 80
    assert "steps: 80" in (short / ".hydra" / "config.yaml").read_text()
    assert "trainer.steps=80" in (short / ".hydra" / "overrides.yaml").read_text()


def test_multirun_writes_one_directory_per_job(gandiv, tmp_path):
    result = gandiv("train", "-m", "objective=forward_kl,reverse_kl", *TINY)
    assert result.code == 0, result.err
    jobs = sorted(tmp_path.glob("multirun/*/*/*/summary.json"))
    assert [read_json(j)["objective"] for j in jobs] == ["forward_kl", "reverse_kl"]
    assert [j.parent.name for j in jobs] == ["0", "1"]


def test_eval_reports_heldout_nll_ground_truth_and_critics(gandiv, tmp_path):
    assert gandiv("train", "trainer.steps=300", "plot.every=0").code == 0
    run = only_run(tmp_path)
    result = gandiv("eval", f"run={run}")
    assert result.code == 0, result.err
    report = read_json(run / "eval.json")
    summary = read_json(run / "summary.json")
    assert report["step"] == 300 and report["n_test"] == 10_000
    truth = report["ground_truth"]
    assert truth["method"] == "quadrature"
    assert truth["kl_pq"] == pytest.approx(summary["kl_pq"], rel=1e-3)
    assert truth["js_pi_0.5"] == pytest.approx(truth["js"], rel=1e-9)
    # Held-out NLL = KL(P||Q) + H(P): it exceeds the KL by the data's entropy (> 0 here).
    assert report["heldout_nll"] > truth["kl_pq"]
    critics = report["independent_critic"]
    assert critics["kl"]["estimate"] == pytest.approx(summary["kl_pq"], rel=0.1)
    assert critics["js"]["estimate"] == pytest.approx(summary["js"], rel=0.1)
    for name, critic in critics.items():  # each number with its uncertainty and bias direction
        assert 0 < critic["stderr"] < 0.05 * critic["estimate"], name
        assert len(critic["fold_estimates"]) == 2 and critic["bias"].startswith("low"), name
        assert (critic["n_test"], critic["model_samples"]) == (10_000, 1_000_000), name
    assert report["modes"]["covered"] == 2 and 0 < report["modes"]["high_quality"] <= 1
    assert set(report["sample_distances"]) == {"mmd", "energy", "sliced_wasserstein"}
    assert (run / "eval.log").is_file()


def test_eval_of_an_implicit_model_uses_a_kernel_density_estimate(gandiv, tmp_path):
    assert gandiv("train", "objective=gan", "model=mlp", *TINY).code == 0
    run = only_run(tmp_path)
    result = gandiv(
        "eval", f"run={run}", "eval.critic.divergences=[wasserstein]", "eval.critic.steps=50"
    )
    assert result.code == 0, result.err
    report = read_json(run / "eval.json")
    assert report["heldout_nll"] is None and "no density" in report["heldout_nll_reason"]
    assert report["ground_truth"]["method"] == "kde" and report["ground_truth"]["bandwidth"] > 0
    assert set(report["independent_critic"]) == {"wasserstein"}


def test_eval_of_a_sweep_writes_eval_csv_at_its_root(gandiv, tmp_path):
    assert gandiv("train", "-m", "objective=forward_kl,reverse_kl", *TINY).code == 0
    (root,) = tmp_path.glob("multirun/*/*")
    result = gandiv("eval", f"run={root}", "eval.critic.divergences=[js]", "eval.critic.steps=50")
    assert result.code == 0, result.err
    lines = (root / "eval.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("job,status,step,n_test,heldout_nll")
    assert all((root / job / "eval.json").is_file() for job in ("0", "1"))
    (root / "sweep.csv").unlink()  # e.g. a sweep copied back from a cluster
    assert (
        gandiv("eval", f"run={root}", "eval.critic.divergences=[js]", "eval.critic.steps=5").code
        == 0
    )
    assert len((root / "sweep.csv").read_text().splitlines()) == 3


def test_eval_rejects_an_unknown_critic_divergence(gandiv, tmp_path):
    assert gandiv("train", *TINY).code == 0
    result = gandiv("eval", f"run={only_run(tmp_path)}", "eval.critic.divergences=[bogus]")
    assert result.code == 2 and "eval.critic.divergences" in result.err


def _gif_frames(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as gif:
        return gif.n_frames


def test_adversarial_run_draws_every_figure_and_plot_redraws_them(gandiv, tmp_path):
    args = ["objective=logit_gan", "model=mlp", "dataset=swiss_roll", "plot.every=10", *TINY]
    assert gandiv("train", *args).code == 0
    run = only_run(tmp_path)
    names = ("density", "critic", "gradient_field", "curves")
    for name in names:
        assert (run / "figures" / f"{name}.png").stat().st_size > 10_000, name
    assert _gif_frames(run / "animation.gif") == 5  # steps 0, 10, 20, 30, 40
    for name in names:
        (run / "figures" / f"{name}.png").unlink()
    (run / "animation.gif").unlink()
    before = digest(run)
    result = gandiv("plot", f"run={run}")
    assert result.code == 0, result.err
    for name in names:
        assert (run / "figures" / f"{name}.png").is_file(), name
    assert _gif_frames(run / "animation.gif") == 5
    after = digest(run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing else changed


def test_resumed_run_keeps_its_animation_frames(gandiv, tmp_path):
    args = ["plot.every=10", "trainer.checkpoint_every=10", *TINY]
    assert gandiv("train", *args, "trainer.steps=20").code == 0
    run = only_run(tmp_path)
    assert gandiv("train", f"resume={run}", "trainer.steps=40").code == 0
    assert _gif_frames(run / "animation.gif") == 5


def test_one_dimensional_run_draws_curves(gandiv, tmp_path):
    args = ["objective=fgan", "dataset.means=[[-1.0],[1.5]]", "plot.every=20", *TINY]
    assert gandiv("train", *args).code == 0
    run = only_run(tmp_path)
    for name in ("density", "critic", "gradient_field", "curves"):
        assert (run / "figures" / f"{name}.png").is_file(), name
    assert _gif_frames(run / "animation.gif") == 3


def test_sweep_root_gets_a_csv_and_a_figure(gandiv, tmp_path):
    result = gandiv(
        "train",
        "-m",
        "objective=direct",
        "objective.divergence=js_pi",
        "objective.pi=0.2,0.8",
        *TINY,
    )
    assert result.code == 0, result.err
    (root,) = tmp_path.glob("multirun/*/*")
    lines = (root / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("job,objective,objective.divergence,objective.pi")
    assert len(lines) == 3 and all(",ok," in line for line in lines[1:])
    assert (root / "sweep.png").stat().st_size > 10_000


def test_a_failing_job_does_not_stop_the_sweep(gandiv, tmp_path):
    result = gandiv(
        "train", "-m", "objective=fgan", "objective.divergence=kl,bogus,js", "plot.every=0", *TINY
    )
    assert result.code == 2
    assert "failed jobs: 1 (the others finished; see sweep.csv)" in result.err
    assert "Traceback" not in result.err
    (root,) = tmp_path.glob("multirun/*/*")
    with open(root / "sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "'bogus' is not one of" in rows[1]["error"]


def test_drawing_never_changes_training_even_with_a_spectrally_normalised_critic(gandiv, tmp_path):
    args = ["objective=gan", "critic.spectral_norm=true", "plot.figures_every=10", *TINY]
    assert gandiv("train", *args, "plot.every=0").code == 0
    assert gandiv("train", *args, "plot.every=5").code == 0
    first, second = run_dirs(tmp_path)
    assert metrics_without_time(first) == metrics_without_time(second)


def test_a_run_killed_after_its_last_checkpoint_can_still_be_finished(gandiv, tmp_path):
    assert gandiv("train", *TINY).code == 0
    run = only_run(tmp_path)
    summary = read_json(run / "summary.json")
    for name in ("summary.json", "samples.npy", "animation.gif"):
        (run / name).unlink()  # as if killed while writing the final files
    result = gandiv("train", f"resume={run}")
    assert result.code == 0, result.err
    again = read_json(run / "summary.json")
    assert again["status"] == "completed" and again["steps"] == 40
    assert again["kl_pq"] == summary["kl_pq"] and again["loss"] == summary["loss"]
    assert (run / "samples.npy").is_file() and (run / "animation.gif").is_file()
    finished = gandiv("train", f"resume={run}")
    assert finished.code == 2 and "already reached step 40" in finished.err
