"""Vectorised groups: stacked networks and optimisers, and the vectorized launcher's sweeps."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from gandiv.models.flow import CouplingFlow
from gandiv.models.gaussian import GaussianModel
from gandiv.models.linear import LinearGenerator
from gandiv.models.mlp import MLPCritic, MLPGenerator
from gandiv.training.loop import RateSchedule
from gandiv.training.stacked import StackedNetwork, StackedOptimizer, unstackable
from gandiv.training.vectorized import CPU_GROUP_BYTES, VectorizedStep, cache_group_size

from .conftest import metrics_without_time, read_json

# A small GAN sweep that trains in a second or two per job.
SMALL = [
    "model=mlp",
    "model.width=16",
    "critic.width=16",
    "trainer.batch_size=64",
    "trainer.steps=30",
    "trainer.log_every=5",
    "trainer.eval_every=0",
    "trainer.checkpoint_every=10",
    "trainer.num_samples=200",
    "plot.every=0",
    "plot.grid=30",
    "plot.samples=50",
]
VECTORIZED = "hydra/launcher=vectorized"


def _networks(kind: str, k: int) -> list[nn.Module]:
    nets: list[nn.Module] = []
    for seed in range(k):
        torch.manual_seed(seed)
        if kind == "generator":
            nets.append(MLPGenerator(2, latent_dim=3, width=8, depth=2))
        elif kind == "critic":
            nets.append(MLPCritic(2, width=8, depth=2))
        elif kind == "gaussian":
            nets.append(GaussianModel(2, init_std=0.5 + seed))
            with torch.no_grad():  # a full Cholesky factor, not the diagonal it starts from
                nets[-1].raw_scale_tril.add_(0.3 * torch.randn(2, 2))
        else:
            nets.append(LinearGenerator(3, latent_dim=2))
    return nets


@pytest.mark.parametrize("kind", ["generator", "critic", "linear", "gaussian"])
def test_a_stack_computes_each_members_own_output_and_gradient(kind):
    nets = _networks(kind, 3)
    alone = copy.deepcopy(nets)
    stack = StackedNetwork(nets)
    inputs = torch.randn(3, 5, 3 if kind == "generator" else 2)
    forward = stack.module if kind == "critic" else stack.module.transform  # type: ignore[union-attr]
    out = forward(inputs)
    out.square().sum().backward()
    for k, net in enumerate(alone):
        own = net(inputs[k]) if kind == "critic" else net.transform(inputs[k])  # type: ignore[operator]
        torch.testing.assert_close(out[k], own, rtol=1e-5, atol=1e-6)
        own.square().sum().backward()
        for (name, p), q in zip(net.named_parameters(), nets[k].parameters(), strict=True):
            assert q.grad is not None, name
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6)


def test_members_parameters_are_views_of_the_stack():
    nets = _networks("critic", 2)
    stack = StackedNetwork(nets)
    with torch.no_grad():
        stack.parameters[0][1].fill_(3.0)  # the first layer's weight of member 1
    first = next(nets[1].parameters())
    assert torch.all(first == 3.0)
    assert not torch.all(next(nets[0].parameters()) == 3.0)
    with torch.no_grad():
        first.fill_(-1.0)  # a member's optimiser steps its parameters in place
    assert torch.all(stack.parameters[0][1] == -1.0)


def test_networks_a_stack_cannot_hold_are_named():
    assert unstackable(MLPCritic(2, width=8, spectral_norm=True)) is not None
    assert "CouplingFlow" in (unstackable(CouplingFlow(2, depth=2, width=8)) or "")
    assert unstackable(MLPGenerator(2)) is None and unstackable(LinearGenerator(2)) is None
    with pytest.raises(ValueError, match="different classes or shapes"):
        StackedNetwork([MLPCritic(2, width=8), MLPCritic(2, width=16)])


@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "decaying"])
@pytest.mark.parametrize("fused", [True, None], ids=["fused", "foreach"])
@pytest.mark.parametrize("lrs", [(0.01, 0.01, 0.01), (0.01, 0.003, 0.02)], ids=["same", "differ"])
def test_a_stacked_optimiser_steps_each_member_as_its_own_adam_would(lrs, fused, scheduled):
    """... also when a rate schedule (RateSchedule: `initial_lr` in the groups, as a resumed
    checkpoint brings it) moves every optimiser's rate between steps."""
    nets = _networks("critic", 3)
    alone = copy.deepcopy(nets)
    fused = {"fused": fused}
    stack = StackedNetwork(nets)
    members = [
        torch.optim.Adam(n.parameters(), lr=lr, **fused) for n, lr in zip(nets, lrs, strict=True)
    ]
    references = [
        torch.optim.Adam(n.parameters(), lr=lr, **fused) for n, lr in zip(alone, lrs, strict=True)
    ]
    schedule = RateSchedule("cosine" if scheduled else "constant", 0.1)
    schedule.apply([*members, *references], 1, 5)
    stepper = StackedOptimizer(stack, members)
    assert (stepper.stacked is not None) == (len(set(lrs)) == 1)  # one Adam when they agree
    x = torch.randn(3, 16, 2)
    for step in range(4):
        schedule.apply([*members, *references], step + 1, 5)
        stack.zero_grad()
        stack.module(x).exp().mean(-1).sum().backward()
        stepper.step()
        for k, (net, opt) in enumerate(zip(alone, references, strict=True)):
            opt.zero_grad()
            net(x[k]).exp().mean().backward()
            opt.step()
    for k in range(3):
        for p, q in zip(nets[k].parameters(), alone[k].parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        # what a checkpoint saves: each member's own optimiser state, current
        saved, reference = members[k].state_dict()["state"], references[k].state_dict()["state"]
        for j in reference:
            assert float(saved[j]["step"]) == 4.0
            assert saved[j]["step"].device == reference[j]["step"].device
            torch.testing.assert_close(saved[j]["exp_avg"], reference[j]["exp_avg"])


def _run_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: int(p.name))


def _close(a: list[dict], b: list[dict], rtol: float = 1e-4) -> None:
    assert len(a) == len(b) and [r.keys() for r in a] == [r.keys() for r in b]
    for x, y in zip(a, b, strict=True):
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=rtol, abs=1e-6), key


def _alone_and_grouped(
    gandiv, tmp_path: Path, args: list[str], size: int, launcher: tuple[str, ...] = ()
) -> list[tuple[Path, Path]]:
    """Run the sweep `args` with the basic and the vectorized launcher (all its jobs one group of
    `size`); check each job's metrics agree; return the pairs of job directories."""
    alone = gandiv("train", "-m", "hydra.sweep.dir=alone", *args)
    assert alone.code == 0, alone.err
    grouped = gandiv("train", "-m", "hydra.sweep.dir=grouped", VECTORIZED, *launcher, *args)
    assert grouped.code == 0, grouped.err
    assert f"training {size} runs as one vectorised group" in grouped.out
    pairs = list(zip(_run_dirs(tmp_path / "alone"), _run_dirs(tmp_path / "grouped"), strict=True))
    assert len(pairs) == size
    for one, two in pairs:
        _close(metrics_without_time(two), metrics_without_time(one))
    return pairs


def test_a_vectorised_sweep_gives_every_run_its_own_numbers_and_files(gandiv, tmp_path):
    """π × seeds: each job as one of a group of 4 gets what it gets alone, in the same files."""
    args = ["objective=js_pi", "objective.pi=0.3,0.7", "trainer.seed=0,1", *SMALL]
    for one, two in _alone_and_grouped(gandiv, tmp_path, args, 4):
        files = {p.relative_to(one) for p in one.rglob("*")}
        assert files == {p.relative_to(two) for p in two.rglob("*")}
        assert read_json(two / "summary.json")["status"] == "completed"
        log = (two / "train.log").read_text()
        assert f"run directory {two}" in log and "done: 30 steps" in log
        # its checkpoint holds its own parameters only, not its group's
        state = torch.load(two / "checkpoints" / "last.pt", weights_only=False)
        for tensor in state["model"].values():
            assert tensor.untyped_storage().nbytes() == tensor.nbytes
    rows = (tmp_path / "grouped" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 5 and all(",ok," in row for row in rows[1:])


def test_runs_with_their_own_learning_rates_and_losses_group_too(gandiv, tmp_path):
    """Different learning rates (each run's own Adam) and different games (rows, model steps)."""
    args = ["objective=gan,ns_gan,logit_gan", "trainer.lr_d=0.01,0.002", *SMALL]
    _alone_and_grouped(gandiv, tmp_path, args, 6)


def test_least_squares_games_group_too(gandiv, tmp_path):
    """Runs whose losses differ only by a coding or a model step (one critic row, different
    `loss_key`s) each keep their own losses in a group."""
    # (seed 1: at seed 0 the first job's batched and single float sums, equal to 1e-7 up to step
    # 15, part by 4e-5 at step 20 and 5e-4 by 30, a kink crossed on one side only; seeds 1 and 2
    # agree to 2e-6 throughout, measured 2026-12-08)
    args = [
        "objective=lsgan",
        "objective.coding=divergence,common",
        "objective.generator=least_squares,minimax",
        "trainer.seed=1",
        *SMALL,
    ]
    _alone_and_grouped(gandiv, tmp_path, args, 4)


def test_ratio_steps_with_their_own_targets_group_too(gandiv, tmp_path):
    args = [
        "objective=gan",
        "objective.generator=ratio",
        "objective.divergence=kl,reverse_kl",
        *SMALL,
    ]
    _alone_and_grouped(gandiv, tmp_path, args, 2)


def test_runs_with_a_decaying_rate_group_too(gandiv, tmp_path):
    """trainer.lr_schedule moves every run's rates, stacked (the model's Adam: equal rates) or
    stepped one by one (the critics': their own rates), as alone."""
    args = ["objective=gan", "trainer.lr_d=0.01,0.002", "trainer.seed=0,1", *SMALL]
    _alone_and_grouped(gandiv, tmp_path, [*args, "trainer.lr_schedule=cosine"], 4)


def test_runs_with_their_own_instance_noise_group_too(gandiv, tmp_path):
    """σ, its annealing and the kernel may differ within a group (each run draws its own noise)."""
    args = [
        "objective=ns_gan",
        "objective.noise=gaussian,laplace",
        "objective.sigma=0.1,0.3",
        "objective.sigma_start=0.5",
        "objective.anneal_steps=20",
        "objective.samples=2",
        *SMALL,
    ]
    _alone_and_grouped(gandiv, tmp_path, args, 4)


def test_the_huszar_pi_sweep_preset_trains_as_one_group(gandiv, tmp_path):
    """Gaussian models fitted by JS_π for five π (five critic steps per model step): one group,
    each run's ground-truth metrics as alone."""
    args = ["+experiment=huszar_pi_sweep", "trainer.steps=20", "trainer.eval_every=10"]
    args += ["trainer.log_every=5", "trainer.num_samples=200", "plot.every=0", "plot.grid=30"]
    launcher = ("hydra.launcher.max_group=0",)  # (auto: 2 at a time on a CPU, for batch 512)
    for _, grouped in _alone_and_grouped(gandiv, tmp_path, args, 5, launcher):
        assert "kl_pq" in metrics_without_time(grouped)[-1]


def test_jobs_that_cannot_join_a_group_train_alone_in_the_same_sweep(gandiv, tmp_path):
    args = ["objective=ns_gan", "objective.gradient_penalty=0,1", "trainer.seed=0,1", *SMALL]
    result = gandiv("train", "-m", VECTORIZED, *args)
    assert result.code == 0, result.err
    # the penalty-free pair, logged on the console in the jobs' format (not the launcher's)
    assert "[gandiv][INFO] - training 2 runs as one vectorised group" in result.out
    assert "[HYDRA] training" not in result.out and "[HYDRA] done" not in result.out
    (root,) = tmp_path.glob("multirun/*/*")
    assert [read_json(d / "summary.json")["status"] for d in _run_dirs(root)] == ["completed"] * 4


def test_a_run_that_breaks_stops_alone_and_the_sweep_reports_it(gandiv, tmp_path, monkeypatch):
    step_of_group = VectorizedStep.__call__

    def breaking_job_1(self: VectorizedStep, step: int) -> dict[str, torch.Tensor]:
        if step == 12:  # an Inf in job 1's generator: its slice of the stacked parameters
            (job_1,) = (t for t in self.tasks if t.run.path.name == "1")
            with torch.no_grad():
                next(job_1.model.parameters()).view(-1)[0] = float("inf")
        return step_of_group(self, step)

    monkeypatch.setattr(VectorizedStep, "__call__", breaking_job_1)
    args = ["objective=ns_gan", "trainer.seed=0,1", *SMALL]
    result = gandiv("train", "-m", "hydra.sweep.dir=sw", VECTORIZED, *args)
    assert result.code == 3, result.err
    assert "Traceback" not in result.err
    assert "job 1 failed: the bound became non-finite (NaN/Inf) at step 13" in result.err
    good, bad = _run_dirs(tmp_path / "sw")
    assert read_json(good / "summary.json")["status"] == "completed"
    summary = read_json(bad / "summary.json")
    assert summary["status"] == "failed" and summary["exit_code"] == 3
    assert "non-finite" in (bad / "train.log").read_text()
    assert torch.load(bad / "checkpoints" / "last.pt", weights_only=True)["step"] == 10
    assert metrics_without_time(bad)[-1]["step"] == 10  # nothing written after the break
    # the healthy run is unaffected by its broken neighbour: the same numbers as alone
    monkeypatch.setattr(VectorizedStep, "__call__", step_of_group)
    one = gandiv("train", "-m", "hydra.sweep.dir=alone", "objective=ns_gan", *SMALL)
    assert one.code == 0, one.err
    _close(metrics_without_time(good), metrics_without_time(tmp_path / "alone" / "0"))


def test_ctrl_c_in_a_group_keeps_a_broken_runs_failure_and_checkpoints_the_others(
    gandiv, tmp_path, monkeypatch
):
    step_of_group = VectorizedStep.__call__

    def breaking_then_interrupted(self: VectorizedStep, step: int) -> dict[str, torch.Tensor]:
        (job_1,) = (t for t in self.tasks if t.run.path.name == "1")
        if step == 12:  # job 1 breaks: recorded at once, while job 0 trains on
            with torch.no_grad():
                next(job_1.model.parameters()).view(-1)[0] = float("inf")
        if step == 16:
            assert read_json(job_1.run.summary_path)["status"] == "failed"
            os.kill(os.getpid(), signal.SIGINT)
        return step_of_group(self, step)

    monkeypatch.setattr(VectorizedStep, "__call__", breaking_then_interrupted)
    args = ["objective=ns_gan", "trainer.seed=0,1", *SMALL]
    result = gandiv("train", "-m", "hydra.sweep.dir=sw", VECTORIZED, *args)
    assert result.code == 130, result.err
    healthy, broken = _run_dirs(tmp_path / "sw")
    assert read_json(healthy / "summary.json")["status"] == "interrupted"
    assert torch.load(healthy / "checkpoints" / "last.pt", weights_only=True)["step"] == 17
    summary = read_json(broken / "summary.json")
    assert summary["status"] == "failed" and "non-finite" in summary["error"]
    assert torch.load(broken / "checkpoints" / "last.pt", weights_only=True)["step"] == 10
    log = (broken / "train.log").read_text()
    assert log.count("became non-finite") == 1
    assert "non-finite" not in (healthy / "train.log").read_text()


def test_a_vectorised_sweep_run_again_with_more_steps_continues_exactly(gandiv, tmp_path):
    args = ["objective=ns_gan", "trainer.seed=0,1", *SMALL]
    longer = [*args, "trainer.steps=50"]
    assert gandiv("train", "-m", "hydra.sweep.dir=straight", VECTORIZED, *longer).code == 0
    assert gandiv("train", "-m", "hydra.sweep.dir=twice", VECTORIZED, *args).code == 0
    again = gandiv("train", "-m", "hydra.sweep.dir=twice", VECTORIZED, *longer)
    assert again.code == 0, again.err
    assert "training 2 runs as one vectorised group" in again.out
    for job in ("0", "1"):
        assert "resuming" in (tmp_path / "twice" / job / "train.log").read_text()
        assert metrics_without_time(tmp_path / "twice" / job) == metrics_without_time(
            tmp_path / "straight" / job
        )


def test_max_group_splits_the_groups_and_is_validated(gandiv, tmp_path):
    args = ["objective=ns_gan", "trainer.seed=0,1,2", *SMALL]
    result = gandiv("train", "-m", VECTORIZED, "hydra.launcher.max_group=2", *args)
    assert result.code == 0, result.err
    assert "training 2 runs as one vectorised group" in result.out
    # the third job, a group of one, logs to its own train.log and in the jobs' format
    (root,) = tmp_path.glob("multirun/*/*")
    assert "[gandiv][INFO] - done: " in (root / "2" / "train.log").read_text()
    assert "[HYDRA] done" not in result.out
    bad = gandiv("train", "-m", VECTORIZED, "hydra.launcher.max_group=-1", *args)
    assert bad.code == 2
    assert bad.err.strip().splitlines() == [
        "gandiv train: error: hydra.launcher.max_group: "
        "must be auto or an integer ≥ 0 (0: no limit), got -1"
    ]


@pytest.mark.parametrize(
    ("width", "batch", "noise", "runs"),
    [(32, 256, False, 8), (128, 256, False, 2), (64, 256, True, 2), (256, 1024, False, 1)],
)
def test_auto_groups_keep_a_layers_outputs_within_the_cpu_budget(width, batch, noise, runs):
    from gandiv.data.spread import SpreadNoise
    from gandiv.divergences import get_divergence
    from gandiv.objectives.adversarial import VariationalDivergence

    spread = SpreadNoise("gaussian", 0.1) if noise else None
    objective = VariationalDivergence(
        "ns_gan",
        MLPCritic(2, width=width),
        get_divergence("gan"),
        "nonsaturating",
        spread=spread,
        spread_samples=2,
    )
    model = MLPGenerator(2, width=width)
    cpu = torch.device("cpu")
    assert cache_group_size(model, objective, batch, cpu) == runs
    # (the group's outputs per layer: runs × (real + fake) × batch × copies × width × 4 bytes)
    assert runs * 2 * batch * (2 if noise else 1) * width * 4 <= CPU_GROUP_BYTES or runs == 1
    assert cache_group_size(model, objective, batch, torch.device("cuda")) == 0  # no limit


def test_stacked_objective_losses_match_the_objectives_own(tmp_path):
    """The loss terms the group computes from stacked critic outputs, row by row, are each run's
    own critic and model losses (`VariationalDivergence.critic_terms`/`model_terms`)."""
    from gandiv.divergences import get_divergence
    from gandiv.objectives.adversarial import VariationalDivergence

    critic = MLPCritic(2, width=8)
    objective = VariationalDivergence("js_pi", critic, get_divergence("js_pi", 0.3), "minimax")
    assert get_divergence("js_pi", 0.3) is objective.row  # equal π: the same row, one call
    v = torch.randn(4, 10, dtype=torch.float64)
    loss, metrics = objective.critic_terms(v[:, :5], v[:, 5:])
    pi = 0.3  # JS_π's bound: π E_p[log σ(V) − log π] − (1 − π) E_q[softplus(V) + log(1 − π)]
    real = pi * (torch.nn.functional.logsigmoid(v[:, :5]) - math.log(pi)).mean(-1)
    fake = (1 - pi) * (torch.nn.functional.softplus(v[:, 5:]) + math.log(1 - pi)).mean(-1)
    torch.testing.assert_close(loss, fake - real)
    minimax = -(1 - pi) * (torch.nn.functional.softplus(v) + math.log(1 - pi)).mean(-1)
    torch.testing.assert_close(objective.model_terms(v), minimax)
    assert json.dumps({k: t.shape[0] for k, t in metrics.items()}) == (
        '{"critic_loss": 4, "bound": 4}'
    )
