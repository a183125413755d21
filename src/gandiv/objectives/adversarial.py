"""Adversarial objectives: a critic estimates a divergence from samples, the model minimises it.

Every adversarial game here is Nowozin et al.'s (2016) variational divergence minimisation with one
row of the divergence table (`gandiv.divergences`):

    critic:  maximise  E_p[g_f(V(x))] − E_q[f*(g_f(V(x̂)))]    (eq. 6; V the raw critic output)
    model:   minimax        minimise −E_q[f*(g_f(V(x̂)))]       (the same bound)
             nonsaturating  maximise  E_q[g_f(V(x̂))]
             logit          maximise  E_q[V(x̂)]                (Huszár's "alternative M-step #2")
             ratio          minimise  E_q[φ_T(ℓ(x̂))]            (Poole et al. 2016; below)

The ratio step (`generator_loss="ratio"`) reads a classifier critic's logit as the log density ratio
ℓ = log p/q (the rows whose optimal output is ℓ plus a constant: gan, js_pi, js) and descends any
chosen row T through it: φ_T(ℓ) = f_T(u) − u f_T'(u), u = e^ℓ, is T's first variation in q
(`FDivergence.first_variation`), so with the critic at its optimum the model's gradient is exactly
∇_θ D_T(P‖Q_θ). One critic, any target divergence.

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

With packing m (PacGAN; Lin et al. 2018) the critic sees m samples at once: a batch (n, d) becomes
(n/m, m·d) (images (n, C, H, W) become (n/m, m·C, H, W): the m images along channels), real and
fake alike, in the critic's loss and in the model's step. The game is then played between the
product distributions P^m and Q^m: the critic's bound estimates D_f(P^m‖Q^m), not D_f(P‖Q), and
the objective states no target divergence (`divergence` None; the README says why). Instance noise
is added after packing (each coordinate of a pack gets its own noise, so the noised pack is drawn
from (P * K)^m).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gandiv.data.spread import SpreadNoise
from gandiv.divergences import DIVERGENCES, FDivergence, pinned
from gandiv.models.base import GenerativeModel
from gandiv.objectives.base import Objective

GENERATOR_LOSSES = ("minimax", "nonsaturating", "logit", "ratio")
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
    With `packing` m > 1 the critic sees packs of m samples (`pack`) and no target is stated.
    """

    uses_critic: ClassVar[bool] = True
    generator_losses: ClassVar[tuple[str, ...]] = GENERATOR_LOSSES

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
        ratio_target: FDivergence | None = None,
        packing: int = 1,
    ) -> None:
        super().__init__()
        if packing < 1:
            raise ValueError(f"packing must be at least 1, got {packing}")
        if generator_loss not in self.generator_losses:
            raise ValueError(f"generator loss must be one of {self.generator_losses}")
        self.name = name  # type: ignore[misc]
        self.critic = critic
        self.row = divergence  # the row whose variational bound the critic maximises
        # The divergence the model step minimises (with an optimal critic), pinned: the row's own
        # target for the minimax step (js for the gan row); for the other steps the caller says
        # (None: no divergence is known).
        self.divergence = target if generator_loss != "minimax" else pinned(divergence)
        self.generator_loss = generator_loss
        self.ratio_target = ratio_target
        self.log_ratio_offset = 0.0  # ℓ = V − offset for the ratio step
        if generator_loss == "ratio":
            at = divergence.critic_at
            if ratio_target is None or ratio_target.first_variation is None:
                raise ValueError("the ratio step needs a target row with a first variation")
            if at is None or not math.isclose(at(1.0) - at(0.0), 1.0):
                raise ValueError(
                    f"the ratio step reads the log ratio from a classifier's logit; the"
                    f" {divergence.name} critic's output is not one"
                )
            self.log_ratio_offset = at(0.0)
            self.divergence = pinned(ratio_target)
        self.packing = packing
        if packing > 1:  # the game is between P^m and Q^m: no divergence of P and Q is known
            self.divergence = None
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

    @property
    def loss_key(self) -> tuple[object, ...]:
        """What decides the losses computed from the critic's outputs: runs of a vectorised group
        with equal keys share one call of `critic_terms` and `model_terms`."""
        target = None if self.ratio_target is None else self.ratio_target.name
        return type(self).__name__, self.row.name, self.generator_loss, target

    def pack(self, x: Tensor) -> Tensor:
        """x with every m = `packing` consecutive samples joined into one input of the critic:
        (n, d) → (n/m, m·d), (n, C, H, W) → (n/m, m·C, H, W); x itself for m = 1."""
        m = self.packing
        if m == 1:
            return x
        if len(x) % m:
            raise ValueError(f"{len(x)} samples cannot be packed in groups of {m}")
        return x.reshape(len(x) // m, m * x.shape[1], *x.shape[2:])

    def noisy(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """x packed (`pack`), and with spread noise: `spread_samples` copies of each (packed)
        point plus noise."""
        x = self.pack(x)
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
        loss, metrics = self.critic_terms(v_real, v_fake)
        if self.gradient_penalty == 0:
            return loss, metrics
        (grad,) = torch.autograd.grad(v_real.sum(), both, create_graph=True)
        # ‖∇_x V(x)‖² sums over every non-batch dimension (the pixels of an image)
        squared_norm = grad[: len(real)].pow(2).flatten(1).sum(1)
        loss = 0.5 * self.gradient_penalty * squared_norm.mean() + loss
        return loss, {**metrics, "critic_loss": loss.detach()}

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
        if self.packing > 1:  # a sample's push depends on the samples packed with it
            raise NotImplementedError("a packed critic's push is not a function of one sample")
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
        if self.generator_loss == "ratio":  # descend the target's first variation at ℓ = V − c
            assert self.ratio_target is not None and self.ratio_target.first_variation is not None
            return self.ratio_target.first_variation(v - self.log_ratio_offset).mean(-1)
        return -v.mean(-1)  # logit: maximise E_q[V]

    def critic_output(self, x: Tensor) -> Tensor:
        """The critic's raw output V(x) (the averaged critic's, with critic_ema); a packed critic
        (packing > 1) is a function of m points, not of one: NotImplementedError."""
        if self.packing > 1:
            raise NotImplementedError("a packed critic is not a function of one point")
        critic = self.critic if self.critic_average is None else self.critic_average
        return self.bounded(critic(x))


class LeastSquares(VariationalDivergence):
    """The least-squares game (Mao et al. 2017) with coding (a, b, c):

        critic:  minimise ½E_p[(D(x) − b)²] + ½E_q[(D(x̂) − a)²]     (D the raw output)
        model:   least_squares  minimise ½E_q[(D(x̂) − c)²]          (Mao et al.'s step)
                 minimax        maximise  E_q[(D(x̂) − a)²]           (descends the bound)

    The optimal critic is D* = (bp + aq)/(p + q); at it the critic's loss is
    ½(b − a)² ∫pq/(p + q), so `bound` = 2 − 4(E_p(D − b)² + E_q(D − a)²)/(b − a)² is a lower bound
    on the triangular discrimination Δ(P, Q) = ∫(p − q)²/(p + q) for every D and every coding,
    reaching it at D*. The minimax step descends that bound, so with an optimal critic it descends
    Δ (its target). Mao et al.'s theorem (b − c = 1, b − a = 2: a = −1, b = 1, c = 0) is about the
    game's value: with D* substituted, their model objective ½E_p(D* − c)² + ½E_q(D* − c)² equals
    ½Δ. Their model step holds the critic fixed instead, and its first variation ½(D*(u) − c)² is
    not Δ's: it descends ∫ q f_M(p/q) with f_M(u) = 2u log(u/(1 + u)) − 2/(1 + u) (up to an affine
    term), which is not convex (f_M'' < 0 for u > 1) and so no divergence. That step therefore
    has no stated target; eval's nearest divergence says where it lands.
    """

    generator_losses: ClassVar[tuple[str, ...]] = ("least_squares", "minimax")

    def __init__(
        self,
        name: str,
        critic: nn.Module,
        coding: tuple[float, float, float],
        generator_loss: str,
        **options: Any,  # gradient_penalty, critic_ema, spread, spread_samples, packing
    ) -> None:
        a, b, _ = coding
        if a == b:
            raise ValueError("the codes a (fake) and b (real) must differ")
        row = DIVERGENCES["triangular"]
        super().__init__(name, critic, row, generator_loss, target=None, **options)
        self.coding = coding

    @property
    def loss_key(self) -> tuple[object, ...]:
        return (*super().loss_key, self.coding)

    def _loss(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        a, b, _ = self.coding
        return 0.5 * ((v_real - b).square().mean(-1) + (v_fake - a).square().mean(-1))

    def _bound_of(self, loss: Tensor) -> Tensor:
        a, b, _ = self.coding
        return 2.0 - 8.0 * loss / (b - a) ** 2

    def bound(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        return self._bound_of(self._loss(v_real, v_fake))

    def critic_terms(self, v_real: Tensor, v_fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = self._loss(v_real, v_fake)
        return loss, {"critic_loss": loss.detach(), "bound": self._bound_of(loss).detach()}

    def model_terms(self, v: Tensor) -> Tensor:
        a, b, c = self.coding
        if self.generator_loss == "least_squares":
            return 0.5 * (v - c).square().mean(-1)
        return -4.0 * (v - a).square().mean(-1) / (b - a) ** 2  # minimax: descend the bound


class Hinge(VariationalDivergence):
    """The hinge game of SNGAN and BigGAN (Lim & Ye 2017; Miyato et al. 2018):

        critic:  minimise E_p[max(0, 1 − D(x))] + E_q[max(0, 1 + D(x̂))]
        model:   minimise −E_q[D(x̂)]

    The optimal critic is D* = sign(p − q) (any value in [−1, 1] where p = q), at which the
    critic's loss is 2 − 2·TV(P, Q): `bound` = 1 − loss/2 is a lower bound on the total variation
    for every D, reaching it at D*. The model step against that step-shaped optimum has no
    gradient almost everywhere (as total variation's f-GAN game); a smooth critic of finite
    capacity gives it one, and no divergence is known that the step then descends: no stated
    target; eval's nearest divergence says where it lands.
    """

    generator_losses: ClassVar[tuple[str, ...]] = ("hinge",)

    def __init__(self, name: str, critic: nn.Module, **options: Any) -> None:
        row = DIVERGENCES["total_variation"]
        super().__init__(name, critic, row, "hinge", target=None, **options)

    @staticmethod
    def _loss(v_real: Tensor, v_fake: Tensor) -> Tensor:
        relu = torch.nn.functional.relu
        return relu(1.0 - v_real).mean(-1) + relu(1.0 + v_fake).mean(-1)

    def bound(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        return 1.0 - 0.5 * self._loss(v_real, v_fake)

    def critic_terms(self, v_real: Tensor, v_fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = self._loss(v_real, v_fake)
        return loss, {"critic_loss": loss.detach(), "bound": (1.0 - 0.5 * loss).detach()}

    def model_terms(self, v: Tensor) -> Tensor:
        return -v.mean(-1)
