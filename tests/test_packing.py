"""Packing (PacGAN, Lin et al. 2018): the critic sees m samples at once, for every game with a
critic; the game is then between P^m and Q^m."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import Tensor, nn

from gandiv import config as C
from gandiv.build import build_critic, build_model, build_objective
from gandiv.data.toy import gaussian
from gandiv.divergences import get_divergence
from gandiv.models import GaussianModel
from gandiv.objectives.adversarial import Hinge, LeastSquares, VariationalDivergence
from gandiv.training.vectorized import unvectorizable

from .conftest import only_run, read_json

GAMES = ("gan", "ns_gan", "logit_gan", "reverse_kl_fgan", "fgan", "js_pi", "lsgan", "hinge")


def _config(*overrides: str) -> C.TrainConfig:
    with initialize_config_module("gandiv.conf", version_base="1.3"):
        return C.validate_train_config(compose("train", overrides=list(overrides)))


class Recording(nn.Module):
    """A critic that records the inputs it sees and returns the sum of each input's entries."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return self.weight * x.flatten(1).sum(1)


class Counting:
    """A model whose i-th sample is the row (1000 + i) · (1, 2, …, d): its packs are checkable."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        rows = 1000.0 + torch.arange(n, dtype=torch.float32)
        entries = torch.arange(1, math.prod(self.shape) + 1, dtype=torch.float32)
        return (rows[:, None] * entries).reshape(n, *self.shape)


@pytest.mark.parametrize("shape", [(2,), (3, 4, 4)], ids=["vectors", "images"])
def test_the_critic_sees_consecutive_samples_joined(shape):
    critic = Recording()
    game = VariationalDivergence("gan", critic, get_divergence("gan"), "minimax", packing=3)
    model = Counting(shape)
    batch = torch.randn(12, *shape, generator=torch.Generator().manual_seed(0))
    game.critic_loss(model, batch, torch.Generator())  # type: ignore[arg-type]
    game.model_loss(model, batch, torch.Generator())  # type: ignore[arg-type]
    both, fake = critic.seen
    packed_shape = (4, 3 * shape[0], *shape[1:])
    assert both.shape == (8, *packed_shape[1:])  # real then fake packs, in one pass
    assert fake.shape == packed_shape
    samples = model.sample(12, torch.Generator())
    for i in range(4):  # pack i holds samples 3i, 3i + 1, 3i + 2, one after another
        assert torch.equal(both[i].flatten(), batch[3 * i : 3 * i + 3].flatten())
        assert torch.equal(fake[i].flatten(), samples[3 * i : 3 * i + 3].flatten())
        assert torch.equal(both[4 + i], fake[i])


def test_instance_noise_copies_are_drawn_per_pack():
    critic = Recording()
    game = VariationalDivergence(
        "gan", critic, get_divergence("gan"), "minimax", packing=2, spread_samples=5
    )
    game.spread = _spread()
    game.critic_loss(Counting((2,)), torch.zeros(6, 2), torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    (both,) = critic.seen
    assert both.shape == (2 * 3 * 5, 4)  # 3 packs of 2 samples, 5 noisy copies each


def _spread():
    from gandiv.data.spread import SpreadNoise

    return SpreadNoise("gaussian", 0.1, None, 0)


def _games(critic: nn.Module, packing: int | None) -> list[VariationalDivergence]:
    extra = {} if packing is None else {"packing": packing}
    return [
        VariationalDivergence("gan", critic, get_divergence("gan"), "minimax", **extra),
        VariationalDivergence("ns", critic, get_divergence("gan"), "nonsaturating", **extra),
        VariationalDivergence("logit", critic, get_divergence("gan"), "logit", **extra),
        VariationalDivergence("kl", critic, get_divergence("kl"), "minimax", **extra),
        VariationalDivergence("js_pi", critic, get_divergence("js_pi", 0.3), "minimax", **extra),
        LeastSquares("lsgan", critic, (-1.0, 1.0, 0.0), "least_squares", **extra),
        Hinge("hinge", critic, **extra),
    ]


def test_packing_one_gives_bit_identical_losses():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0))
    q = GaussianModel(2)
    batch = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    for packed, plain in zip(_games(critic, 1), _games(critic, None), strict=True):
        loss, _ = packed.critic_loss(q, batch, torch.Generator().manual_seed(2))
        with torch.no_grad():
            fake = q.sample(32, torch.Generator().manual_seed(2))
            expected, _ = plain.critic_terms(critic(batch), critic(fake))
        assert torch.equal(loss.detach(), expected), packed.name
        model_loss = packed.model_loss(q, batch, torch.Generator().manual_seed(3))
        with torch.no_grad():
            fake = q.sample(32, torch.Generator().manual_seed(3))
            assert torch.equal(model_loss.detach(), plain.model_terms(critic(fake))), packed.name
        samples = torch.randn(8, 2)
        assert torch.equal(packed.critic_output(samples), plain.critic_output(samples))


class ExactLogRatio(nn.Module):
    """V(x_1, …, x_m) = Σ_i log p(x_i)/q(x_i) + 1 for 1-D Gaussians P, Q: the kl row's optimal
    critic of P^m against Q^m (T* = 1 + log dP^m/dQ^m)."""

    def __init__(self, p: torch.distributions.Normal, q: torch.distributions.Normal) -> None:
        super().__init__()
        self.p, self.q = p, q

    def forward(self, x: Tensor) -> Tensor:
        return (self.p.log_prob(x) - self.q.log_prob(x)).sum(1) + 1.0


@pytest.mark.parametrize("m", [1, 2, 3])
def test_the_kl_bound_with_an_exact_packed_critic_is_m_times_the_kl(m):
    """KL(P^m‖Q^m) = m·KL(P‖Q): the packed game's value is the product's divergence."""
    mu_p, mu_q, s_p, s_q = 0.0, 0.5, 1.0, 1.2
    p, q = torch.distributions.Normal(mu_p, s_p), torch.distributions.Normal(mu_q, s_q)
    kl = math.log(s_q / s_p) + (s_p**2 + (mu_p - mu_q) ** 2) / (2 * s_q**2) - 0.5
    model = GaussianModel(1)
    with torch.no_grad():
        model.loc.fill_(mu_q)
        model.raw_scale_tril.fill_(math.log(math.expm1(s_q)))
    model.requires_grad_(False)
    game = VariationalDivergence(
        "kl", ExactLogRatio(p, q), get_divergence("kl"), "minimax", packing=m
    )
    n = 240_000
    generator = torch.Generator().manual_seed(0)
    batch = p.mean + p.stddev * torch.randn(n, 1, generator=generator)
    with torch.no_grad():
        _, metrics = game.critic_loss(model, batch, generator)
    assert float(metrics["bound"]) == pytest.approx(m * kl, abs=0.02)


def test_packed_games_state_no_target_and_draw_no_single_point_critic():
    data = gaussian([0.0], [[1.0]])
    for name in GAMES:
        extra = ["objective.divergence=kl"] if name == "fgan" else []
        for m in (1, 2):
            cfg = _config(f"objective={name}", f"objective.packing={m}", "model=mlp", *extra)
            model = build_model(cfg.model, data.dim)
            game = build_objective(cfg.objective, data, cfg.critic, None, model=model)
            assert isinstance(game, VariationalDivergence)
            first = next(layer for layer in game.critic.modules() if isinstance(layer, nn.Linear))
            assert first.in_features == m * data.dim, name
            if m == 1:
                unpacked = _config(f"objective={name}", "model=mlp", *extra)
                plain = build_objective(unpacked.objective, data, unpacked.critic, None)
                assert game.divergence == plain.divergence, name
                continue
            assert game.divergence is None, name
            assert unvectorizable(model, game) == "objective.packing > 1"
            with pytest.raises(NotImplementedError):
                game.critic_output(torch.zeros(4, 1))
            with pytest.raises(NotImplementedError):
                game.sample_loss(model, torch.zeros(4, 1), torch.zeros(4, 1))


def test_a_packed_image_critic_takes_the_images_along_channels():
    cfg = C.DCGANCriticConfig(
        name="dcgan", width=4, batch_norm=False, spectral_norm=False, channels_last=False, ema=0.0
    )
    critic = build_critic(cfg, 3 * 16 * 16, image_size=16, packing=2)
    game = VariationalDivergence("gan", critic, get_divergence("gan"), "minimax", packing=2)
    images = torch.randn(6, 3, 16, 16)
    assert critic(game.pack(images)).shape == (3,)
    assert critic(game.pack(images.flatten(1))).shape == (3,)  # flattened images alike


def test_old_runs_without_the_key_trained_unpacked():
    saved = {"objective": {"name": "gan"}, "trainer": {}}
    assert C.with_added_keys(saved)["objective"]["packing"] == 1
    saved = {"objective": {"name": "mmd"}, "trainer": {}}
    assert "packing" not in C.with_added_keys(saved)["objective"]


def test_a_packed_run_trains_and_reports_its_modes(gandiv, tmp_path):
    result = gandiv(
        "train",
        "objective=gan",
        "objective.packing=2",
        "dataset=ring8",
        "model=mlp",
        "trainer.steps=30",
    )
    assert result.code == 0, result.err
    run = only_run(tmp_path)
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed"
    assert summary["modes_n_modes"] == 8
    assert 0 <= summary["modes_covered"] <= 8
    assert 0.0 <= summary["modes_high_quality"] <= 1.0
    assert 0.0 <= summary["modes_hist_js"] <= math.log(2) + 1e-12
    assert "objective.packing=2" in summary["ideal"]["reason"]
    figures = {path.name for path in (run / "figures").iterdir()}
    assert "density.png" in figures
    assert not figures & {"critic.png", "gradient_field.png"}  # not functions of one point
