"""Adversarial objectives: a critic estimates a divergence from samples, the model minimises it.

Every adversarial game here is Nowozin et al.'s (2016) variational divergence minimisation with one
row of the divergence table (`gandiv.divergences`):

    critic:  maximise  E_p[g_f(V(x))] − E_q[f*(g_f(V(x̂)))]    (eq. 6; V the raw critic output)
    model:   minimax        minimise −E_q[f*(g_f(V(x̂)))]       (the same bound)
             nonsaturating  maximise  E_q[g_f(V(x̂))]
             logit          maximise  E_q[V(x̂)]                (Huszár's "alternative M-step #2")

With the ``gan`` row, g_f(v) = log σ(v) and f*(g_f(v)) = softplus(v), so the critic is the original
GAN discriminator D = σ(V) and the three model steps are Goodfellow et al.'s minimax step
(minimise E_q log(1 − D)), the non-saturating step (maximise E_q log D), and Huszár's logit step
(maximise E_q log D/(1 − D) ≈ −KL(Q‖P)). With the ``js_pi`` row the critic's objective is the
class-weighted log loss π E_p log D + (1 − π) E_q log(1 − D) up to a constant: the discriminator of
Huszár's JS_π sees real and fake in the ratio π : (1 − π); at its optimum D* = πp/(πp + (1−π)q)
the bound equals JS_π(P‖Q).

With spread noise (instance noise; Zhang et al. 2018) the same noise is added to real and fake
samples before the critic sees them, so the game is played between P̃ = P * K and Q̃ = Q * K, whose
supports overlap even when P and Q lie on different curves.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gandiv.data.spread import SpreadNoise
from gandiv.divergences import FDivergence, pinned
from gandiv.models.base import GenerativeModel
from gandiv.objectives.base import Objective

GENERATOR_LOSSES = ("minimax", "nonsaturating", "logit")
# Seed of the fixed noise with which `sample_loss` (figures) averages the push over the spread.
SAMPLE_LOSS_SEED = 5_555


class VariationalDivergence(Objective):
    """The f-GAN game for one divergence row, with a choice of model step.

    `target` is the divergence a non-minimax model step minimises with an optimal critic (the
    logit step: KL(Q‖P)); the minimax step minimises the row's own divergence.
    `gradient_penalty` γ adds Mescheder et al.'s (2018) R1 penalty γ/2 · E_p‖∇_x V(x)‖² to the
    critic's loss. With `critic_ema` > 0 the model steps against an exponential moving average of
    the critic's weights (decay `critic_ema`) instead of the critic itself. With `spread`,
    `spread_samples` noisy copies of every real and fake sample are shown to the critic instead.
    """

    uses_critic: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        critic: nn.Module,
        divergence: FDivergence,
        generator_loss: str,
        gradient_penalty: float = 0.0,
        critic_ema: float = 0.0,
        target: FDivergence | None = None,
        spread: SpreadNoise | None = None,
        spread_samples: int = 1,
        log_ratio_bound: float | None = None,
    ) -> None:
        super().__init__()
        if generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"generator loss must be one of {GENERATOR_LOSSES}")
        self.name = name  # type: ignore[misc]
        self.critic = critic
        self.row = divergence  # the row whose variational bound the critic maximises
        # The divergence the model step minimises (with an optimal critic), pinned: the row's own
        # target for the minimax step (js for the gan row); for the other steps the caller says
        # (None: no divergence is known).
        self.divergence = target if generator_loss != "minimax" else pinned(divergence)
        self.generator_loss = generator_loss
        self.gradient_penalty = gradient_penalty
        self.spread = spread
        self.spread_samples = spread_samples
        # With a bound B, the critic's output is clipped to [V*(−B), V*(B)] (`bounded`): the
        # density ratio it implies stays within [e^−B, e^B] (the bound stays a lower bound on D_f:
        # any T is allowed), and exp-type activations and conjugates cannot overflow where the
        # critic extrapolates.
        # (Total variation's activation ½ tanh is bounded already; its optimal critic, a step,
        # has no finite range, and the bound leaves it alone.)
        self.critic_range: tuple[float, float] | None = None
        if log_ratio_bound is not None and divergence.critic_at is not None:
            at = divergence.critic_at
            self.critic_range = (at(-log_ratio_bound), at(log_ratio_bound))
        self.critic_average = (
            AveragedModel(critic, multi_avg_fn=get_ema_multi_avg_fn(critic_ema), use_buffers=True)
            if critic_ema > 0
            else None
        )
        if self.critic_average is not None:
            self.critic_average.requires_grad_(False)

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    def noisy(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """x itself, or with spread noise: `spread_samples` copies of each point plus noise."""
        if self.spread is None:
            return x
        return self.spread.kernel_at(self.step).add_noise(x, generator, self.spread_samples)

    def bound(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        """E_p[g_f(V)] − E_q[f*(g_f(V))] from raw critic outputs: the critic's estimate of D_f.

        The expectations are means over the last axis (a leading axis holds the runs of a
        vectorised group, `gandiv.training.stacked`).
        """
        act, conj = self.row.activation, self.row.conjugate_activation
        return act(self.bounded(v_real)).mean(-1) - conj(self.bounded(v_fake)).mean(-1)

    def bounded(self, v: Tensor) -> Tensor:
        """The raw critic output clipped to `critic_range` (itself when there is none).

        Only the value is clipped: the gradient passes as if it were not (straight through), so
        a critic beyond the range is still pulled back, and a model whose samples all lie where
        the critic is clipped still gets a finite gradient (evaluated at the clipped value)."""
        if self.critic_range is None:
            return v
        low, high = self.critic_range
        largest = torch.finfo(v.dtype).max  # (the χ² and Jeffrey ranges grow like e^B)
        clipped = v.clamp(max(low, -largest), min(high, largest))
        return v + (clipped - v).detach()

    def critic_terms(self, v_real: Tensor, v_fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The critic's loss (minus the bound) from its outputs, and the metrics logged with it."""
        bound = self.bound(v_real, v_fake)
        loss = -bound
        return loss, {"critic_loss": loss.detach(), "bound": bound.detach()}

    def critic_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        # critic: maximise E_p[g_f(V(x))] − E_q[f*(g_f(V(x̂)))], model held fixed
        self.critic.requires_grad_(True)
        with torch.no_grad():
            fake = self.noisy(model.sample(len(batch), generator), generator)
        real = self.noisy(batch, generator)
        both = torch.cat([real, fake])  # one critic pass over real and fake
        if self.gradient_penalty > 0:
            both.requires_grad_(True)
        v = self.critic(both)
        v_real, v_fake = v[: len(real)], v[len(real) :]
        if self.gradient_penalty == 0:
            return self.critic_terms(v_real, v_fake)
        bound = self.bound(v_real, v_fake)
        (grad,) = torch.autograd.grad(v_real.sum(), both, create_graph=True)
        # ‖∇_x V(x)‖² sums over every non-batch dimension (the pixels of an image)
        squared_norm = grad[: len(real)].pow(2).flatten(1).sum(1)
        loss = 0.5 * self.gradient_penalty * squared_norm.mean() - bound
        return loss, {"critic_loss": loss.detach(), "bound": bound.detach()}

    def after_critic_step(self) -> None:
        if self.critic_average is not None:
            self.critic_average.update_parameters(self.critic)

    def model_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> Tensor:
        self.critic.requires_grad_(False)  # gradients flow only into the model's parameters
        fake = self.noisy(model.sample(len(batch), generator), generator)
        return self._model_step(fake)

    def sample_loss(self, model: GenerativeModel, samples: Tensor, batch: Tensor) -> Tensor:
        if self.spread is not None:  # the push averaged over fixed noise draws
            local = torch.Generator(device=samples.device).manual_seed(SAMPLE_LOSS_SEED)
            samples = self.noisy(samples, local)
        return self._model_step(samples)

    def _model_step(self, samples: Tensor) -> Tensor:
        critic = self.critic if self.critic_average is None else self.critic_average
        return self.model_terms(critic(samples))

    def model_terms(self, v: Tensor) -> Tensor:
        """The model's loss from the critic's outputs on its samples (means over the last axis)."""
        v = self.bounded(v)
        if self.generator_loss == "minimax":  # minimise the bound: −E_q[f*(g_f(V))]
            return -self.row.conjugate_activation(v).mean(-1)
        if self.generator_loss == "nonsaturating":  # maximise E_q[g_f(V)]
            return -self.row.activation(v).mean(-1)
        return -v.mean(-1)  # logit: maximise E_q[V]

    def critic_output(self, x: Tensor) -> Tensor:
        """The critic's raw output V(x) (the averaged critic's, with critic_ema)."""
        critic = self.critic if self.critic_average is None else self.critic_average
        return self.bounded(critic(x))
