"""trainer.lr_schedule: the rates' curve, applied to every optimiser, resumed exactly, grouped
exactly, and refused where it cannot mean what it says."""

from __future__ import annotations

import itertools
import math
import os
import signal

import pytest
import torch

from gandiv.training import loop
from gandiv.training.loop import RateSchedule

from .conftest import TINY, final_model_state, metrics_without_time, only_run, read_json

GAME = ["objective=fgan", "objective.divergence=kl", *TINY, "plot.every=0"]


@pytest.mark.parametrize("shape", ["linear", "cosine"])
@pytest.mark.parametrize("end", [0.0, 0.1, 0.5])
def test_a_decay_runs_from_the_rate_to_its_end_factor_and_never_rises(shape, end):
    schedule, steps = RateSchedule(shape, end), 101
    factors = [schedule.factor(s, steps) for s in range(steps)]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(end, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(factors))
    middle = factors[50]  # half way: both curves at the mean of their ends
    assert middle == pytest.approx((1 + end) / 2, abs=1e-12)
    quarter = factors[25]  # a quarter of the way: linear ¾, cosine (1 + cos(π/4))/2 of the fall
    fall = 0.75 if shape == "linear" else (1 + math.cos(math.pi / 4)) / 2
    assert quarter == pytest.approx(end + (1 - end) * fall, abs=1e-12)


def test_a_constant_schedule_leaves_the_rates_alone():
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.3)
    RateSchedule("constant", 0.1).apply([optimizer, None], 50, 100)
    assert optimizer.param_groups[0]["lr"] == 0.3 and "initial_lr" not in optimizer.param_groups[0]


def test_every_network_steps_at_its_own_rate_times_the_factor(gandiv, tmp_path, monkeypatch):
    """The model's and the critic's rates (lr_g ≠ lr_d) both follow the curve, step by step."""
    seen: list[tuple[int, float, float]] = []
    real_step = loop.ObjectiveStep.__call__

    def recording(self, step):
        t = self.task
        assert t.critic_optimizer is not None
        seen.append(
            (step, t.optimizer.param_groups[0]["lr"], t.critic_optimizer.param_groups[0]["lr"])
        )
        return real_step(self, step)

    monkeypatch.setattr(loop.ObjectiveStep, "__call__", recording)
    args = ["trainer.lr_schedule=cosine", "trainer.lr_end_factor=0.2", "trainer.lr_g=0.004"]
    result = gandiv("train", *GAME, *args, "trainer.lr_d=0.001")
    assert result.code == 0, result.err
    schedule = RateSchedule("cosine", 0.2)
    assert [s for s, _, _ in seen] == list(range(40))
    for step, lr_g, lr_d in seen:
        assert lr_g == pytest.approx(0.004 * schedule.factor(step, 40), rel=1e-12)
        assert lr_d == pytest.approx(0.001 * schedule.factor(step, 40), rel=1e-12)
    assert seen[-1][1] == pytest.approx(0.004 * 0.2)
    # and the run's numbers differ from the constant rate's (the schedule reaches the updates)
    constant = gandiv("train", *GAME, "trainer.lr_g=0.004", "trainer.lr_d=0.001")
    assert constant.code == 0, constant.err
    runs = sorted(p.parent for p in tmp_path.glob("outputs/*/*/summary.json"))
    assert (
        read_json(runs[0] / "summary.json")["kl_pq"] != read_json(runs[1] / "summary.json")["kl_pq"]
    )


def test_a_decaying_run_stopped_mid_way_resumes_on_the_same_curve(gandiv, tmp_path, monkeypatch):
    """Stopped by a signal at step 23 and resumed, it ends exactly as the run that never stopped."""
    args = [*GAME, "trainer.lr_schedule=linear", "trainer.lr_end_factor=0.0"]
    assert gandiv("train", *args, "hydra.run.dir=straight").code == 0
    real_step = loop.ObjectiveStep.__call__

    def stopping(self, step):
        if step == 22:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, step)

    monkeypatch.setattr(loop.ObjectiveStep, "__call__", stopping)
    stopped = gandiv("train", *args, "hydra.run.dir=stopped")
    assert stopped.code == 143, stopped.err
    state = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 23
    monkeypatch.setattr(loop.ObjectiveStep, "__call__", real_step)
    resumed = gandiv("train", f"resume={tmp_path / 'stopped'}")
    assert resumed.code == 0, resumed.err
    straight, again = tmp_path / "straight", tmp_path / "stopped"
    assert metrics_without_time(again) == metrics_without_time(straight)
    for key, value in final_model_state(straight).items():
        assert torch.equal(value, final_model_state(again)[key]), key


def test_a_decaying_run_cannot_change_its_length_on_resume(gandiv, tmp_path):
    args = [*GAME, "trainer.lr_schedule=cosine"]
    assert gandiv("train", *args).code == 0
    run = only_run(tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    longer = gandiv("train", f"resume={run}", "trainer.steps=80")
    assert longer.code == 2 and "Traceback" not in longer.err
    assert "trainer.steps" in longer.err and "decay over its 40 steps" in longer.err
    again = gandiv("train", f"resume={run}")
    assert again.code == 2 and "already reached step 40" in again.err
    assert "train a new run" in again.err and "pass a larger" not in again.err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("trainer.lr_schedule", "step", "constant, linear, cosine"),
        ("trainer.lr_end_factor", "1.5", "<= 1"),
        ("trainer.lr_end_factor", "-0.1", ">= 0"),
    ],
)
def test_bad_schedule_settings_are_refused_in_one_line(gandiv, tmp_path, key, value, says):
    result = gandiv("train", *GAME, f"{key}={value}")
    assert result.code == 2 and key in result.err and says in result.err, result.err
    assert "Traceback" not in result.err and not list(tmp_path.glob("outputs/*/*/metrics.jsonl"))


def test_a_run_saved_before_the_schedule_existed_resumes_as_it_trained(gandiv, tmp_path):
    """Its checkpoint and config lack trainer.lr_schedule: it is read as the constant rates it
    trained with, and can still be extended (a game whose defaults keep constant rates)."""
    assert gandiv("train", "objective=gan", *TINY, "plot.every=0").code == 0
    run = only_run(tmp_path)
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=False)
    for key in ("lr_schedule", "lr_end_factor"):
        del state["config"]["trainer"][key]
    torch.save(state, path)
    config = run / ".hydra" / "config.yaml"
    lines = config.read_text().splitlines(keepends=True)
    config.write_text(
        "".join(line for line in lines if "lr_schedule" not in line and "lr_end" not in line)
    )
    result = gandiv("train", f"resume={run}", "trainer.steps=60")
    assert result.code == 0, result.err
    assert read_json(run / "summary.json")["steps"] == 60


def test_an_end_factor_at_constant_rates_is_said_to_do_nothing(gandiv, tmp_path):
    result = gandiv("train", "objective=gan", *TINY, "plot.every=0", "trainer.lr_end_factor=0.01")
    assert result.code == 0, result.err
    log = (only_run(tmp_path) / "train.log").read_text()
    assert "ignored: trainer.lr_end_factor=0.01 (the rates are constant" in log
    assert "ignored: trainer.lr_end_factor" in result.err + result.out  # (said on the terminal)
    decaying = gandiv("train", *GAME, "trainer.lr_schedule=linear", "trainer.lr_end_factor=0.01")
    assert decaying.code == 0, decaying.err
    assert "ignored" not in decaying.err + decaying.out
