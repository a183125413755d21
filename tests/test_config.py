"""Every option of every config group composes, validates and builds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from gandiv import config as C
from gandiv.build import (
    build_critic,
    build_dataset,
    build_model,
    build_objective,
    check_combination,
)
from gandiv.errors import UserError

CONF = Path(__file__).parents[1] / "src" / "gandiv" / "conf"
GROUPS = ("dataset", "model", "objective", "critic", "trainer")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
# Built on images, from a CelebA copy: tests/test_celeba_runs.py
IMAGE_OPTIONS = {("dataset", "celeba"), ("model", "dcgan"), ("critic", "dcgan")}
VECTOR_OPTIONS = [o for o in OPTIONS if o not in IMAGE_OPTIONS]


def _compose(*overrides: str, config: str = "train"):
    with initialize_config_module("gandiv.conf", version_base="1.3"):
        return compose(config, overrides=list(overrides))


# Options that need a partner: zero-width data and the linear generator are fitted by `spread`,
# which needs a generator.
PARTNERS = {
    ("dataset", "line"): ["objective=spread", "model=linear"],
    ("dataset", "circle"): ["objective=spread", "model=linear"],
    ("model", "linear"): ["objective=spread"],
    ("objective", "spread"): ["model=linear"],
}


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize(
    ("group", "option"), VECTOR_OPTIONS, ids=[f"{g}={o}" for g, o in VECTOR_OPTIONS]
)
def test_every_option_composes_validates_and_builds(group, option):
    # Implicit generators need a sample-based objective, which the adversarial objectives add;
    # here the model is built on its own.
    cfg = C.validate_train_config(_compose(f"{group}={option}", *PARTNERS.get((group, option), [])))
    assert getattr(cfg, group).name == option if group != "trainer" else cfg.trainer.steps > 0
    data = build_dataset(cfg.dataset)
    model = build_model(cfg.model, data.dim)
    x = model.sample(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, data.dim)
    critic = build_critic(cfg.critic, data.dim)
    assert critic(x).shape == (8,)
    if cfg.model.name != "mlp":
        check_combination(cfg.objective, cfg.model, data)
        objective = build_objective(
            cfg.objective, data, cfg.critic, cfg.trainer.grid_points, model=model
        )
        batch = data.sample(16, torch.Generator().manual_seed(1))
        loss = objective.model_loss(model, batch, torch.Generator().manual_seed(2))
        assert torch.isfinite(loss)
        if objective.uses_critic:
            critic_loss, _ = objective.critic_loss(model, batch, torch.Generator())
            assert torch.isfinite(critic_loss)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "js", "total_variation"])
@pytest.mark.parametrize(
    "dataset",
    # the Swiss roll's density by quadrature over its curve takes about a minute on 2 cores
    ["gaussian", "mixture", "ring8", "grid25", pytest.param("swiss_roll", marks=pytest.mark.slow)],
)
def test_direct_objective_on_every_dataset(dataset, divergence):
    cfg = C.validate_train_config(
        _compose(f"dataset={dataset}", "objective=direct", f"objective.divergence={divergence}")
    )
    data = build_dataset(cfg.dataset)
    model = build_model(cfg.model, data.dim)
    objective = build_objective(cfg.objective, data, cfg.critic, 64)
    loss = objective.model_loss(model, data.sample(4, torch.Generator()), torch.Generator())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


ADVERSARIAL = ["gan", "ns_gan", "logit_gan", "reverse_kl_fgan", "fgan", "js_pi"]


@pytest.mark.parametrize("objective", ADVERSARIAL)
def test_adversarial_objectives_bring_their_own_training_settings(objective):
    """The games' defaults are their own, not the maximum-likelihood ones of trainer/default.yaml;
    the command line and presets still win."""
    shared = C.validate_train_config(_compose()).trainer
    own = C.validate_train_config(_compose(f"objective={objective}")).trainer
    assert (own.betas, own.critic_steps) == ([0.5, 0.999], 3)
    fgan = objective == "fgan"
    assert (own.lr, own.lr_d) == ((0.008, 0.002) if fgan else (0.002, None))
    assert own.steps == (4000 if fgan else 2000)
    assert (own.lr_schedule, own.lr_end_factor) == (("cosine", 0.1) if fgan else ("constant", 0.1))
    assert (shared.lr, shared.betas, shared.critic_steps) == (0.01, [0.9, 0.999], 1)
    user = C.validate_train_config(_compose(f"objective={objective}", "trainer.lr=0.05")).trainer
    assert user.lr == 0.05 and user.critic_steps == 3 and user.lr_d == (0.002 if fgan else None)
    restored = C.validate_train_config(_compose(f"objective={objective}", "trainer=default"))
    assert restored.trainer == shared
    preset = C.validate_train_config(
        _compose("+experiment=huszar_pi_sweep", f"objective={objective}")
    ).trainer
    assert (preset.lr, preset.critic_steps, preset.steps) == (0.005, 5, 3000)


def test_a_kinked_f_gan_game_is_refused_unless_allowed():
    cfg = C.validate_train_config(
        _compose("objective=fgan", "objective.divergence=total_variation")
    )
    data = build_dataset(cfg.dataset)
    with pytest.raises(UserError, match=r"objective\.allow_unstable=true") as refused:
        build_objective(cfg.objective, data, cfg.critic, None)
    assert refused.value.where == "objective.divergence" and "objective=direct" in str(
        refused.value
    )
    allowed = C.validate_train_config(
        _compose(
            "objective=fgan",
            "objective.divergence=total_variation",
            "objective.allow_unstable=true",
        )
    )
    assert build_objective(allowed.objective, data, allowed.critic, None).row.kinked


def test_eval_config_composes():
    cfg = C.validate_eval_config(_compose("run=some/dir", config="eval"))
    assert cfg.run == "some/dir" and cfg.device == "auto"


def test_schemas_and_yaml_files_name_the_same_options():
    assert {p.stem for p in (CONF / "dataset").glob("*.yaml")} == set(C.DATASETS)
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} == set(C.MODELS)
    assert {p.stem for p in (CONF / "objective").glob("*.yaml")} == set(C.OBJECTIVES)
    assert {p.stem for p in (CONF / "critic").glob("*.yaml")} == set(C.CRITICS)


SAMPLE_BASED = [
    "gan",
    "ns_gan",
    "logit_gan",
    "reverse_kl_fgan",
    "fgan",
    "js_pi",
    "lsgan",
    "hinge",
    "mmd",
]


def _softplus(v: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(v)


def _expected_critic_loss(cfg: C.TrainConfig, v_real: torch.Tensor, v_fake: torch.Tensor) -> float:
    """Each game's critic loss at its shipped settings, written out from the papers (not from the
    divergence table), from the critic's outputs on the real and fake batch."""
    name = cfg.objective.name
    if name in ("gan", "ns_gan", "logit_gan"):  # the binary log loss, summed over the classes
        return float(_softplus(-v_real).mean() + _softplus(v_fake).mean())
    if name == "js_pi":  # class weights π : 1 − π, up to the constants of JS_π's bound
        assert isinstance(cfg.objective, C.JSPiConfig)
        pi = cfg.objective.pi
        value = (
            pi * (-_softplus(-v_real) - math.log(pi)).mean()
            - (1 - pi) * (_softplus(v_fake) + math.log(1 - pi)).mean()
        )
        return -float(value)
    if (
        name == "fgan"
    ):  # the shipped row is js: ½(log 2 − softplus(−V)), f* ∘ g_f = ½(softplus(V) − log 2)
        assert isinstance(cfg.objective, C.FGANConfig) and cfg.objective.divergence == "js"
        real = 0.5 * (math.log(2) - _softplus(-v_real)).mean()
        return -float(real - 0.5 * (_softplus(v_fake) - math.log(2)).mean())
    if name == "reverse_kl_fgan":  # T = −e^{−V}, f*(T) = −1 − log(−T) = V − 1
        return -float((-torch.exp(-v_real)).mean() - (v_fake - 1).mean())
    if name == "lsgan":  # the divergence coding a, b = −1, 1
        return float(0.5 * ((v_real - 1).square().mean() + (v_fake + 1).square().mean()))
    assert name == "hinge"
    return float(torch.relu(1 - v_real).mean() + torch.relu(1 + v_fake).mean())


@pytest.mark.parametrize("dataset", ["gaussian", "mixture", "ring8", "grid25", "swiss_roll"])
@pytest.mark.parametrize("model", ["gaussian", "flow", "mlp"])
@pytest.mark.parametrize("objective", SAMPLE_BASED)
def test_every_sample_based_objective_trains_every_model_on_every_dataset(
    objective, model, dataset
):
    # (js_pi at a π whose 1 − π differs: a prior swapped for its complement must show)
    extra = ["objective.pi=0.3"] if objective == "js_pi" else []
    cfg = C.validate_train_config(
        _compose(f"objective={objective}", f"model={model}", f"dataset={dataset}", *extra)
    )
    data = build_dataset(cfg.dataset)
    check_combination(cfg.objective, cfg.model, data)
    torch.manual_seed(0)
    generative = build_model(cfg.model, data.dim)
    built = build_objective(cfg.objective, data, cfg.critic, None)
    generator = torch.Generator().manual_seed(0)
    batch = data.sample(64, generator)
    if built.uses_critic:
        before = generator.get_state()
        critic_loss, metrics = built.critic_loss(generative, batch, generator)
        critic_loss.backward()
        assert torch.isfinite(critic_loss) and set(metrics) == {"critic_loss", "bound"}
        assert all(torch.isfinite(p.grad).all() for p in built.critic_parameters())
        # the value, from the same draws (the critic's outputs on the real and the fake batch)
        with torch.no_grad():
            fake = generative.sample(len(batch), torch.Generator().set_state(before))
            v_real, v_fake = built.critic(batch), built.critic(fake)
        expected = _expected_critic_loss(cfg, v_real, v_fake)
        assert float(critic_loss) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    loss = built.model_loss(generative, batch, generator)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in generative.parameters())


def test_a_run_saved_before_keys_were_added_loads_as_it_trained(tmp_path):
    """An f-GAN run saved before the log-ratio bound, the kinked-row refusal and the rate
    schedule existed is read (for eval, plot, resume) with the bound off, its row allowed and
    its rates constant: how it trained."""
    cfg = _compose("objective=fgan", "objective.divergence=total_variation")
    del cfg.objective.log_ratio_bound
    del cfg.objective.allow_unstable
    del cfg.trainer.lr_schedule
    del cfg.trainer.lr_end_factor
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    loaded = C.load_train_config(path)
    assert loaded.objective.log_ratio_bound is None and loaded.objective.allow_unstable is True
    assert loaded.trainer.lr_schedule == "constant"
    fresh = C.validate_train_config(_compose("objective=fgan"))
    assert fresh.objective.log_ratio_bound == 10.0 and fresh.objective.allow_unstable is False
