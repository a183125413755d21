"""The command line: usage, Hydra's help/config printing, completion, and user errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gandiv.build import check_combination
from gandiv.config import ObjectiveConfig
from gandiv.data.toy import gaussian
from gandiv.errors import UserError

from .conftest import run_dirs

# (arguments, text the one-line message must contain)
USER_ERRORS = [
    (
        ["train", "objective=foo"],
        "objective=foo: unknown option; choose one of: direct, fgan, forward_kl, gan, js_pi",
    ),
    (["train", "dataset=nope"], "dataset=nope: unknown option; choose one of:"),
    (["train", "trainer.steps=abc"], "trainer.steps: Value 'abc'"),
    (["train", "trainer.steps=2.5"], "trainer.steps"),
    (["train", "trainer.foo=1"], "trainer.foo: unknown key"),
    (["train", "+trainer.foo=1"], "trainer.foo: unknown key; trainer accepts: steps"),
    (["train", "+foo=3"], "foo: unknown key; the train config has: dataset"),
    (["train", "+dataset.mean=[1.0,2.0]"], "dataset.mean: unknown key"),
    (["train", "trainer.steps=0"], "trainer.steps: must be >= 1, got 0"),
    (["train", "trainer.lr=-1"], "trainer.lr: must be > 0.0"),
    (["train", "trainer.batch_size=0"], "trainer.batch_size: must be >= 1"),
    (["train", "trainer.betas=[0.9]"], "trainer.betas: must be a list of 2 numbers"),
    (["train", "trainer.betas=[0.9,1.5]"], "trainer.betas: must be >= 0.0 and < 1.0"),
    (["train", "trainer.device=tpu"], "trainer.device: 'tpu' is not allowed; choose one of: auto"),
    (["train", "trainer.optimizer=lbfgs"], "trainer.optimizer: 'lbfgs' is not allowed"),
    (["train", "trainer.log_every=-1"], "trainer.log_every: must be >= 0"),
    (["train", "trainer.steps=[1"], "trainer.steps=[1: cannot parse this override"),
    (
        ["train", "objective=direct", "objective.divergence=bogus"],
        "objective.divergence: unknown divergence 'bogus'; allowed: kl, reverse_kl",
    ),
    (["train", "objective=direct", "objective.divergence=js_pi"], "objective.pi: divergence=js_pi"),
    (
        ["train", "objective=direct", "objective.divergence=js_pi", "objective.pi=1.5"],
        "objective.pi: must be > 0.0 and < 1.0, got 1.5",
    ),
    (["train", "objective=direct", "objective.pi=0.5"], "objective.pi: only applies to"),
    (["train", "model=mlp"], "forward_kl needs a model with a density, but model=mlp"),
    (["train", "model=mlp", "objective=reverse_kl"], "reverse_kl needs a model with a density"),
    (["train", "model=mlp", "objective=direct"], "direct needs a model with a density"),
    (
        ["train", "objective=js_pi", "objective.pi=0"],
        "objective.pi: must be > 0.0 and < 1.0, got 0",
    ),
    (["train", "objective=fgan", "objective.divergence=js_pi"], "for JS_π use objective=js_pi"),
    (
        ["train", "objective=fgan", "objective.divergence=nope"],
        "objective.divergence: 'nope' is not one of: kl, reverse_kl, pearson, neyman, "
        "squared_hellinger, jeffrey, js, gan, total_variation\n",
    ),
    (["train", "objective=fgan", "objective.generator=logit"], "objective.generator: 'logit'"),
    (["train", "objective=gan", "objective.gradient_penalty=-1"], "gradient_penalty: must be >= 0"),
    (["train", "objective=mmd", "objective.bandwidths=[]"], "bandwidths: must not be an empty"),
    (["train", "objective=mmd", "objective.bandwidths=[0.5,0]"], "bandwidths: must be > 0.0"),
    (["train", "objective=gan", "trainer.critic_steps=0"], "trainer.critic_steps: must be >= 1"),
    (["train", "objective=gan", "critic.ema=1.0"], "critic.ema: must be >= 0.0 and < 1.0"),
    (["train", "model=flow", "model.depth=0"], "model.depth: must be >= 1"),
    (["train", "model=mlp", "model.activation=sigmoid"], "model.activation: 'sigmoid'"),
    (["train", "critic.activation=sigmoid"], "critic.activation: 'sigmoid' is not allowed"),
    (
        ["train", "model=flow", "dataset.means=[[-1],[1]]"],
        "model: a coupling flow needs data of dimension",
    ),
    (["train", "dataset.weights=[0.3,0.3]"], "dataset: weights must sum to 1"),
    (["train", "dataset.weights=[0.2,0.3,0.5]"], "dataset:"),
    (["train", "dataset.means=[[0.0,0.0],[1.0,1.0,1.0]]"], "dataset:"),
    (["train", "dataset.stds=[0.5,-1.0]"], "dataset:"),
    (["train", "dataset.stds=null"], "dataset: give exactly one of dataset.stds"),
    (
        ["train", "dataset.stds=null", "dataset.covs=[[[1,2],[2,1]],[[1,0],[0,1]]]"],
        "not positive-definite",
    ),
    (["train", "dataset=gaussian", "dataset.cov=[[1,2],[2,1]]"], "dataset:"),
    (["train", "dataset=swiss_roll", "dataset.noise=-0.1"], "dataset.noise: must be > 0.0"),
    (["train", "dataset.n_test=0"], "dataset.n_test: must be >= 2"),
    (
        ["train", "dataset.n_train=100", "trainer.batch_size=512"],
        "trainer.batch_size: 512 is larger than the training set (dataset.n_train=100)",
    ),
    (["train", "resume=does/not/exist"], "resume: 'does/not/exist' is not a directory"),
    (["eval"], "run: missing; usage: gandiv eval run=DIR"),
    (["eval", "run=does/not/exist"], "is not a gandiv run or sweep directory"),
    (["eval", "run=."], "is not a gandiv run or sweep directory"),
    (["bogus"], "unknown command 'bogus'; choose one of: train, eval, plot"),
    (["train", "objective=mmd", "trainer.batch_size=1"], "objective=mmd needs at least 2 samples"),
    (["train", "plot.grid=100000"], "plot.grid: must be >= 16 and <= 1000, got 100000"),
    (["train", "trainer.lr=1e38"], "trainer.lr: must be > 0.0 and <= 1000.0"),
    (["plot"], "run: missing; usage: gandiv plot run=DIR"),
    (["train", "hydra.run.dir=/proc/gandiv-run"], "/proc/gandiv-run: No such file or directory"),
    (["plot", "run=nowhere"], "is not a gandiv run directory"),
    (["eval", "run=nowhere", "run=elsewhere"], "'elsewhere' is not a gandiv run or sweep"),
    ([], "usage: gandiv <command>"),
]


@pytest.mark.parametrize(
    ("args", "message"), USER_ERRORS, ids=[" ".join(a) for a, _ in USER_ERRORS]
)
def test_user_error_is_one_line_exit_2_and_writes_nothing(gandiv, tmp_path, args, message):
    result = gandiv(*args)
    assert result.code == 2
    assert "Traceback" not in result.err
    assert message in result.err
    if args:
        error_lines = [line for line in result.err.splitlines() if "error:" in line]
        assert len(error_lines) == 1, result.err
        assert "usage" in result.err or result.err.count("\n") == 1, result.err
    assert run_dirs(tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(gandiv, tmp_path):
    result = gandiv("train", "trainer.device=cuda")
    assert result.code == 2
    assert "trainer.device: cuda requested but no CUDA device is available" in result.err
    assert run_dirs(tmp_path) == []


def test_objective_needing_the_data_density_refuses_data_without_one():
    data = gaussian([0.0], [[1.0]])
    data.has_density = False  # as for a dataset known only through samples
    model = type("M", (), {"name": "gaussian"})()
    for name in ("reverse_kl", "direct"):
        with pytest.raises(UserError, match=f"{name} needs the data's density"):
            check_combination(ObjectiveConfig(name=name), model, data)
    check_combination(ObjectiveConfig(name="forward_kl"), model, data)


def test_help_lists_every_group_and_option(gandiv):
    result = gandiv("train", "--help")
    assert result.code == 0
    conf = Path(__file__).parents[1] / "src" / "gandiv" / "conf"
    for group in ("dataset", "model", "objective", "critic", "trainer"):
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in result.out


def test_top_level_help_and_eval_help(gandiv):
    top = gandiv("--help")
    assert top.code == 0 and "gandiv train" in top.out and "gandiv eval run=DIR" in top.out
    ev = gandiv("eval", "--help")
    assert ev.code == 0 and "run: ???" in ev.out


def test_cfg_job_prints_the_composed_config_with_overrides(gandiv):
    result = gandiv("train", "objective=direct", "objective.divergence=js", "--cfg", "job")
    assert result.code == 0
    assert "divergence: js" in result.out and "name: direct" in result.out
    assert "steps: 1000" in result.out


def test_shell_completion_dispatches_to_the_subcommand(gandiv, monkeypatch):
    monkeypatch.setenv("COMP_LINE", "gandiv train objective=")
    result = gandiv("-sc", "query=bash")
    assert "objective=forward_kl" in result.out and "objective=direct" in result.out
    monkeypatch.setenv("COMP_LINE", "gandiv tr")
    assert gandiv("-sc", "query=bash").out.split() == ["train"]
    install = gandiv("train", "-sc", "install=bash")
    assert install.code == 0 and "complete" in install.out
