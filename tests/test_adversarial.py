"""The adversarial game: critics reach the divergences they bound, model steps are as written."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gandiv.data.toy import gaussian
from gandiv.divergences import DIVERGENCE_NAMES, get_divergence
from gandiv.evaluation.distances import mmd2_unbiased
from gandiv.evaluation.quadrature import f_divergence, integrate, make_grid
from gandiv.models import GaussianModel, MLPCritic
from gandiv.objectives.adversarial import VariationalDivergence

P = gaussian([0.0], [[1.0]])


def _model_q(mean: float = 0.8, std: float = 1.0) -> GaussianModel:
    """Q = N(mean, std²) as a (frozen) GaussianModel, so the product's sampling path is used."""
    q = GaussianModel(1)
    with torch.no_grad():
        q.loc.fill_(mean)
        q.raw_scale_tril.fill_(math.log(math.expm1(std)))
    return q.requires_grad_(False)


def _train_critic(objective: VariationalDivergence, q: GaussianModel, steps: int) -> None:
    optimizer = torch.optim.Adam(objective.critic_parameters(), lr=1e-3, betas=(0.5, 0.999))
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss, _ = objective.critic_loss(q, P.sample(1024, generator), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_trained_critic_makes_the_bound_reach_the_divergence(name):
    """Trained on samples of N(0, 1) and N(0.8, 1), the critic's bound is within 5% of D_f."""
    torch.manual_seed(0)
    q = _model_q()
    row = get_divergence(name, 0.3 if name == "js_pi" else None)
    objective = VariationalDivergence(name, MLPCritic(1, 64, 2), row, "minimax")
    _train_critic(objective, q, steps=1500)
    grid = make_grid([-9.0], [9.0], 4000)
    with torch.no_grad():
        log_p, log_q = P.log_prob(grid.points), q.log_prob(grid.points.float()).double()
        v = objective.critic(grid.points.float()).double()
        bound = integrate(log_p.exp() * row.activation(v), grid) - integrate(
            log_q.exp() * row.conjugate_activation(v), grid
        )
        truth = f_divergence(row, log_p, log_q, grid)
    assert float(bound) <= float(truth) + 1e-6  # a lower bound for every critic
    assert float(bound) == pytest.approx(float(truth), rel=0.05)


@pytest.mark.parametrize("pi", [0.2, 0.5, 0.8])
def test_js_pi_discriminator_optimum_is_js_pi_minus_the_prior_entropy(pi):
    """π E_p log D + (1−π) E_q log(1−D) at the trained D equals JS_π(P‖Q) − H(π) (Huszár 2015)."""
    torch.manual_seed(1)
    q = _model_q(1.5, 0.8)
    objective = VariationalDivergence(
        "js_pi", MLPCritic(1, 64, 2), get_divergence("js_pi", pi), "minimax"
    )
    _train_critic(objective, q, steps=1500)
    grid = make_grid([-9.0], [9.0], 4000)
    x = grid.points
    with torch.no_grad():
        p = P.log_prob(x).exp()
        q_density = q.log_prob(x.float()).double().exp()
        log_d = F.logsigmoid(objective.critic(x.float()).double())
        log_not_d = F.logsigmoid(-objective.critic(x.float()).double())
        weighted_log_loss = pi * integrate(p * log_d, grid) + (1 - pi) * integrate(
            q_density * log_not_d, grid
        )
        m = pi * p + (1 - pi) * q_density
        js_pi = pi * integrate(p * torch.log(p / m), grid) + (1 - pi) * integrate(
            q_density * torch.log(q_density / m), grid
        )
    entropy = -pi * math.log(pi) - (1 - pi) * math.log(1 - pi)
    assert float(weighted_log_loss) == pytest.approx(float(js_pi) - entropy, abs=0.01 * entropy)


def _fixed_critic_objective(generator_loss: str, **kwargs) -> VariationalDivergence:
    torch.manual_seed(2)
    return VariationalDivergence(
        "gan", MLPCritic(2, 16, 2), get_divergence("gan"), generator_loss, **kwargs
    )


@pytest.mark.parametrize(
    ("generator_loss", "expected"),
    [
        ("minimax", lambda v: F.logsigmoid(-v).mean()),  # minimise E_q log(1 − D)
        ("nonsaturating", lambda v: -F.logsigmoid(v).mean()),  # maximise E_q log D
        ("logit", lambda v: -v.mean()),  # maximise E_q log D/(1 − D)
    ],
)
def test_gan_model_steps_are_the_ones_in_the_papers(generator_loss, expected):
    objective = _fixed_critic_objective(generator_loss)
    model = GaussianModel(2)
    loss = objective.model_loss(model, torch.zeros(256, 2), torch.Generator().manual_seed(3))
    with torch.no_grad():
        v = objective.critic(model.sample(256, torch.Generator().manual_seed(3)))
    assert float(loss.detach()) == pytest.approx(float(expected(v)), rel=1e-5)


def test_gan_critic_loss_is_the_binary_log_loss():
    objective = _fixed_critic_objective("minimax")
    model, real = GaussianModel(2), torch.randn(128, 2)
    loss, metrics = objective.critic_loss(model, real, torch.Generator().manual_seed(4))
    fake = model.sample(128, torch.Generator().manual_seed(4))
    with torch.no_grad():
        v_real, v_fake = objective.critic(real), objective.critic(fake)
    log_loss = F.binary_cross_entropy_with_logits(
        torch.cat([v_real, v_fake]), torch.cat([torch.ones(128), torch.zeros(128)])
    )
    assert float(loss.detach()) == pytest.approx(2 * float(log_loss), rel=1e-5)
    assert float(metrics["bound"]) == pytest.approx(-float(loss.detach()), rel=1e-6)


def test_each_step_sends_gradients_only_to_its_own_parameters():
    objective = _fixed_critic_objective("nonsaturating")
    model = GaussianModel(2)
    loss, _ = objective.critic_loss(model, torch.randn(64, 2), torch.Generator())
    loss.backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in objective.critic_parameters())
    objective.critic.zero_grad(set_to_none=True)
    objective.model_loss(model, torch.randn(64, 2), torch.Generator()).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(p.grad is None for p in objective.critic_parameters())


def test_r1_gradient_penalty_adds_half_gamma_times_the_squared_gradient_norm():
    plain = _fixed_critic_objective("minimax")
    penalised = _fixed_critic_objective("minimax", gradient_penalty=10.0)
    model, real = GaussianModel(2), torch.randn(64, 2)
    base, _ = plain.critic_loss(model, real, torch.Generator().manual_seed(5))
    with_penalty, _ = penalised.critic_loss(model, real, torch.Generator().manual_seed(5))
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(penalised.critic(x).sum(), x)
    assert float((with_penalty - base).detach()) == pytest.approx(
        5.0 * float(grad.pow(2).sum(1).mean()), rel=1e-4
    )


def test_critic_ema_is_an_exponential_average_of_the_critic_weights():
    objective = _fixed_critic_objective("minimax", critic_ema=0.9)
    assert objective.critic_average is not None
    first = [p.detach().clone() for p in objective.critic.parameters()]
    objective.after_critic_step()  # the average starts at the critic
    with torch.no_grad():
        for p in objective.critic.parameters():
            p.add_(1.0)
    objective.after_critic_step()
    for averaged, start in zip(objective.critic_average.module.parameters(), first, strict=True):
        assert torch.allclose(averaged, start + 0.1, atol=1e-6)


def test_unbiased_mmd_matches_a_direct_double_sum():
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(7, 2, generator=g), torch.randn(5, 2, generator=g) + 1
    bandwidths = (0.5, 2.0)

    def k(a, b):
        return sum(math.exp(-float((a - b).pow(2).sum()) / (2 * s * s)) for s in bandwidths)

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(a, b) for a in x for b in y) / 35
    assert float(mmd2_unbiased(x, y, bandwidths)) == pytest.approx(xx + yy - 2 * xy, rel=1e-5)
    same = torch.randn(2000, 2, generator=g)
    assert abs(float(mmd2_unbiased(same[:1000], same[1000:], bandwidths))) < 0.01


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "pearson", "neyman", "jeffrey"])
def test_a_log_ratio_bound_keeps_an_extrapolating_critic_finite(name):
    """A critic far outside the data's range (|V| = 1e30) overflows the exp-type activations and
    conjugates; with the bound B the implied ratio stays in [e^−B, e^B] and every term is finite,
    while inside that range the game is the unbounded one."""
    row = get_divergence(name)
    plain = VariationalDivergence("fgan", MLPCritic(1, 8, 1), row, "minimax")
    bounded = VariationalDivergence(
        "fgan", MLPCritic(1, 8, 1), row, "minimax", log_ratio_bound=10.0
    )
    assert bounded.critic_range == (row.critic_at(-10.0), row.critic_at(10.0))
    wild = torch.tensor([-1e30, 1e30])
    assert not torch.isfinite(plain.bound(wild, wild))
    assert torch.isfinite(bounded.bound(wild, wild)) and torch.isfinite(bounded.model_terms(wild))
    tame = torch.tensor([row.critic_at(-3.0), row.critic_at(0.5), row.critic_at(4.0)])
    assert torch.equal(bounded.bound(tame, tame.flip(0)), plain.bound(tame, tame.flip(0)))
    assert torch.equal(bounded.model_terms(tame), plain.model_terms(tame))


def test_a_clipped_critic_still_passes_gradients():
    """Beyond the range the value is clipped but the gradient is not lost: the critic is pulled
    back towards the range and the model's samples still move (at the clipped value's slope)."""
    row = get_divergence("reverse_kl")
    game = VariationalDivergence("fgan", MLPCritic(1, 8, 1), row, "minimax", log_ratio_bound=10.0)
    v_real = torch.tensor([-50.0], requires_grad=True)  # far below V*(−10) = −10
    loss, _ = game.critic_terms(v_real, torch.tensor([0.0]))
    (grad,) = torch.autograd.grad(loss, v_real)
    assert grad.item() == pytest.approx(-math.exp(10.0), rel=1e-6)  # −d/dV (−e^{−V}) at V = −10
    v_fake = torch.tensor([50.0], requires_grad=True)
    (grad,) = torch.autograd.grad(game.model_terms(v_fake), v_fake)
    assert grad.item() == pytest.approx(-1.0)  # −d/dV (V − 1)


@pytest.mark.parametrize("name", ["pearson", "jeffrey"])
def test_the_largest_allowed_bound_clips_within_the_critics_dtype(name):
    """objective.log_ratio_bound allows B up to 700, where Pearson's and Jeffrey's V*(±B) are
    about ±1e304: beyond float32 (and bf16). The clip then stops at the dtype's largest value."""
    row = get_divergence(name)
    game = VariationalDivergence("fgan", MLPCritic(1, 8, 1), row, "minimax", log_ratio_bound=700.0)
    for dtype in (torch.float32, torch.bfloat16):
        v = torch.tensor([-1e30, 0.5, 1e30], dtype=dtype)
        out = game.bounded(v)
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert out[1] == v[1]
