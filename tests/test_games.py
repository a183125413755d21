"""The games beyond the f-GAN rows against their mathematics, by 1-D quadrature: Poole et al.'s
ratio step descends its target's exact gradient; the least-squares critic bounds the triangular
discrimination, and only its minimax step descends it; the hinge critic bounds total variation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, MixtureSameFamily, Normal

from gandiv.divergences import DIVERGENCES, FDivergence, js_pi
from gandiv.objectives.adversarial import Hinge, LeastSquares, VariationalDivergence

D64 = torch.float64

# P: a two-component 1-D mixture; Q_θ = N(μ, σ²) at θ0 = (0.4, 1.0), whose tails match P's so
# that both χ² rows (∫ p²/q − 1, ∫ q²/p − 1) are finite and their integrands decay fast
P = MixtureSameFamily(
    Categorical(torch.tensor([0.35, 0.65], dtype=D64)),
    Normal(torch.tensor([-1.0, 1.2], dtype=D64), torch.tensor([0.9, 1.0], dtype=D64)),
)
THETA0 = (0.4, 1.0)
X = torch.linspace(-14.0, 14.0, 40001, dtype=D64)  # the quadrature grid (trapezoid rule)
# Latents at equal-probability midpoints: a mean over them is E_z[h(μ + σz)] to O(1/n)
Z = Normal(0.0, 1.0).icdf((torch.arange(200_000, dtype=D64) + 0.5) / 200_000)


def trapezoid(values: Tensor) -> Tensor:
    return torch.trapezoid(values, X)


def theta() -> tuple[Tensor, Tensor]:
    return (
        torch.tensor(THETA0[0], dtype=D64, requires_grad=True),
        torch.tensor(THETA0[1], dtype=D64, requires_grad=True),
    )


def log_q(x: Tensor, mu: Tensor | float, sigma: Tensor | float) -> Tensor:
    return Normal(mu, sigma).log_prob(x)


def divergence_gradient(row: FDivergence) -> Tensor:
    """∇_(μ, σ) D_f(P‖Q_θ) at θ0 by quadrature (autograd through q_θ in the integrand)."""
    mu, sigma = theta()
    value = trapezoid(row.perspective(P.log_prob(X), log_q(X, mu, sigma)))
    return torch.stack(torch.autograd.grad(value, (mu, sigma)))


def first_variation_gradient(h: Callable[[Tensor], Tensor]) -> Tensor:
    """∇_θ ∫ q_θ(x) h(x) dx with h held fixed, by quadrature: the gradient a model step whose loss
    is E_q[h(x̂)] with a fixed critic follows."""
    mu, sigma = theta()
    value = trapezoid(log_q(X, mu, sigma).exp() * h(X))
    return torch.stack(torch.autograd.grad(value, (mu, sigma)))


class ExactCritic(nn.Module):
    """V(x) = the optimal critic at θ0 of a game, as a function of p(x) and q_θ0(x)."""

    def __init__(self, of_densities: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.of_densities = of_densities

    def forward(self, x: Tensor) -> Tensor:
        x = x.squeeze(-1)
        return self.of_densities(P.log_prob(x), log_q(x, *THETA0))


def model_step_gradient(objective: VariationalDivergence) -> Tensor:
    """∇_θ of the objective's model loss on x̂ = μ + σz (the pathwise gradient the loop takes)."""
    mu, sigma = theta()
    loss = objective.model_terms(objective.critic((mu + sigma * Z).unsqueeze(-1)))
    return torch.stack(torch.autograd.grad(loss, (mu, sigma)))


# ------------------------------------------------------------------------------ the ratio step

TARGETS = [row for row in DIVERGENCES.values() if not row.kinked]
CLASSIFIERS = [DIVERGENCES["gan"], js_pi(0.3), js_pi(0.8)]


@pytest.mark.parametrize("classifier", CLASSIFIERS, ids=lambda r: r.name)
@pytest.mark.parametrize("target", TARGETS, ids=lambda r: r.name)
def test_ratio_step_with_the_optimal_classifier_follows_the_targets_gradient(
    classifier: FDivergence, target: FDivergence
) -> None:
    assert classifier.critic_at is not None
    offset = classifier.critic_at(0.0)  # the classifier's logit is log p/q + log π/(1 − π)
    critic = ExactCritic(lambda lp, lq: lp - lq + offset)
    objective = VariationalDivergence("gan", critic, classifier, "ratio", ratio_target=target)
    assert objective.divergence is (DIVERGENCES["js"] if target.name == "gan" else target)
    expected = divergence_gradient(target)
    torch.testing.assert_close(model_step_gradient(objective), expected, rtol=2e-3, atol=2e-4)


def test_the_naive_ratio_loss_would_not_follow_kls_gradient() -> None:
    # E_q[f(r)] with r held fixed (u log u for KL(P‖Q)) has first variation f(u), not
    # f(u) − u f'(u): the check above can tell them apart
    kl = DIVERGENCES["kl"]
    naive = first_variation_gradient(lambda x: kl.f((P.log_prob(x) - log_q(x, *THETA0)).exp()))
    assert not torch.allclose(naive, divergence_gradient(kl), rtol=0.05)


def test_ratio_step_refuses_a_critic_that_is_not_a_classifier() -> None:
    with pytest.raises(ValueError, match="classifier"):
        VariationalDivergence(
            "gan", nn.Linear(1, 1), DIVERGENCES["pearson"], "ratio", ratio_target=DIVERGENCES["kl"]
        )


# ------------------------------------------------------------------------- least squares

CODINGS = {"divergence": (-1.0, 1.0, 0.0), "common": (0.0, 1.0, 1.0)}
TRIANGULAR = DIVERGENCES["triangular"]


def lsgan_optimum(coding: tuple[float, float, float]) -> Callable[[Tensor, Tensor], Tensor]:
    a, b, _ = coding
    return lambda lp, lq: (
        b * torch.sigmoid(lp - lq) + a * torch.sigmoid(lq - lp)
    )  # (bp + aq)/(p + q)


def _weighted_bound(objective: VariationalDivergence, v: Tensor, p: Tensor, q: Tensor) -> Tensor:
    # E_p[φ(V)] and E_q[ψ(V)] for the per-sample terms φ, ψ of each game's bound
    if isinstance(objective, LeastSquares):
        a, b, _ = objective.coding
        real = trapezoid(p * (v - b).square())
        fake = trapezoid(q * (v - a).square())
        return 2.0 - 4.0 * (real + fake) / (b - a) ** 2
    assert isinstance(objective, Hinge)
    loss = trapezoid(p * torch.relu(1.0 - v)) + trapezoid(q * torch.relu(1.0 + v))
    return 1.0 - 0.5 * loss


@pytest.mark.parametrize("coding", list(CODINGS.values()), ids=list(CODINGS))
def test_least_squares_bound_reaches_the_triangular_discrimination_at_the_optimal_critic(
    coding: tuple[float, float, float],
) -> None:
    objective = LeastSquares("lsgan", ExactCritic(lsgan_optimum(coding)), coding, "least_squares")
    truth = float(trapezoid(TRIANGULAR.perspective(P.log_prob(X), log_q(X, *THETA0))))
    v = objective.critic(X.unsqueeze(-1))
    p, q = P.log_prob(X).exp(), log_q(X, *THETA0).exp()
    assert float(_weighted_bound(objective, v, p, q)) == pytest.approx(truth, rel=1e-6)
    for shift in (0.3, -0.2):  # any other critic bounds it from below
        assert float(_weighted_bound(objective, v + shift, p, q)) < truth
    # and the objective's own estimate from samples is the same function of the outputs
    v_real, v_fake = torch.tensor([0.2, 0.9], dtype=D64), torch.tensor([-0.5, 0.1], dtype=D64)
    loss, metrics = objective.critic_terms(v_real, v_fake)
    a, b, _ = coding
    expected_loss = 0.5 * ((v_real - b).square().mean() + (v_fake - a).square().mean())
    assert float(loss) == pytest.approx(float(expected_loss))
    assert float(metrics["bound"]) == pytest.approx(2.0 - 8.0 * float(expected_loss) / (b - a) ** 2)


@pytest.mark.parametrize("coding", list(CODINGS.values()), ids=list(CODINGS))
def test_least_squares_minimax_step_follows_the_triangular_gradient(
    coding: tuple[float, float, float],
) -> None:
    objective = LeastSquares("lsgan", ExactCritic(lsgan_optimum(coding)), coding, "minimax")
    assert objective.divergence is TRIANGULAR
    expected = divergence_gradient(TRIANGULAR)
    torch.testing.assert_close(model_step_gradient(objective), expected, rtol=2e-3, atol=2e-4)


def test_maos_step_descends_f_m_and_not_the_triangular_discrimination() -> None:
    # With the divergence coding and the critic held at its optimum, Mao et al.'s model step
    # ½E_q(D − c)² has first variation ½((u − 1)/(u + 1))²: the gradient of ∫ q f_M(p/q) with
    # f_M(u) = 2u log(u/(1 + u)) − 2/(1 + u), which differs from Δ's
    coding = CODINGS["divergence"]
    objective = LeastSquares("lsgan", ExactCritic(lsgan_optimum(coding)), coding, "least_squares")
    assert objective.divergence is None  # no stated target
    got = model_step_gradient(objective)

    def f_m_perspective(lp: Tensor, lq: Tensor) -> Tensor:  # q f_M(p/q)
        log_u = lp - lq
        return lq.exp() * (
            2.0 * log_u.exp() * (log_u - torch.logaddexp(log_u, torch.zeros_like(log_u)))
            - 2.0 * torch.sigmoid(-log_u)
        )

    mu, sigma = theta()
    value = trapezoid(f_m_perspective(P.log_prob(X), log_q(X, mu, sigma)))
    expected = torch.stack(torch.autograd.grad(value, (mu, sigma)))
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=2e-4)
    assert not torch.allclose(got, divergence_gradient(TRIANGULAR), rtol=0.05)


# ---------------------------------------------------------------------------------- hinge


def test_hinge_bound_reaches_total_variation_at_the_optimal_critic() -> None:
    sign = ExactCritic(lambda lp, lq: torch.sign(lp - lq))
    objective = Hinge("hinge", sign)
    tv = float(
        trapezoid(DIVERGENCES["total_variation"].perspective(P.log_prob(X), log_q(X, *THETA0)))
    )
    p, q = P.log_prob(X).exp(), log_q(X, *THETA0).exp()
    v = sign(X.unsqueeze(-1))
    assert float(_weighted_bound(objective, v, p, q)) == pytest.approx(tv, rel=1e-4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):  # any critic bounds it from below
        wobble = torch.randn(len(X), generator=generator, dtype=D64)
        assert float(_weighted_bound(objective, 1.5 * torch.tanh(v + wobble), p, q)) < tv
    # the losses are the SNGAN/BigGAN hinge terms
    v_real, v_fake = torch.tensor([0.5, 2.0, -1.0]), torch.tensor([-2.0, 0.0, 0.5])
    loss, metrics = objective.critic_terms(v_real, v_fake)
    assert float(loss) == pytest.approx((0.5 + 0.0 + 2.0) / 3 + (0.0 + 1.0 + 1.5) / 3)
    assert float(metrics["bound"]) == pytest.approx(1.0 - 0.5 * float(loss))
    assert float(objective.model_terms(v_fake)) == pytest.approx(-float(v_fake.mean()))
    assert objective.divergence is None
