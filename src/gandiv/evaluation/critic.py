"""The independent critic: a divergence estimated by a critic trained from scratch on held-out data.

Gulrajani, Raffel & Metz (2018, "Towards GAN benchmarks which require generalization") and Im et
al. (2018, "Quantitatively evaluating GANs with divergences proposed for training") score a model
by training a fresh critic to tell held-out data from the model's samples. For an f-divergence the
critic V maximises Nowozin et al.'s (2016, eq. 6) variational lower bound

    D_f(P‖Q) ≥ E_p[g_f(V(x))] − E_q[f*(g_f(V(x̂)))],

and for the Wasserstein distance it is a gradient-penalty critic (Gulrajani et al. 2017, eq. 3;
by default the one-sided penalty of Petzka et al. 2018):

    W₁(P, Q) ≈ max_V E_p V(x) − E_q V(x̂) − λ E_x̃ max(0, ‖∇V(x̃)‖ − 1)²,  x̃ on segments x → x̂.

The soft penalty lets the slope exceed 1: for a translation the penalised optimum is V = c⟨u, x⟩
with c = 1 + W/2λ, so the estimate is ≈ W(1 + W/2λ) (+5% at W = 1, λ = 10).

The held-out data is split in two: the critic trains on the first half against fresh model samples
and the reported estimate is the bound of its weight average on the second half, which the critic
never saw. For an f-divergence the estimate is a lower bound (up to sampling noise) that approaches
the divergence as the critic approaches the optimum V*; bounds of unbounded divergences (KL, χ²)
stay far below large true values, which would need ~e^D samples (McAllester & Stratos 2020).

The held-out data must be data the model never saw. A model that memorised its training set is
caught only if that set is disjoint from ``real``: a critic trained on fresh data against copies of
a finite training set learns the copies, and its held-out estimate stays clearly above zero, where a
model that generalises scores ≈ 0 (Gulrajani et al. 2018, §3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gandiv.divergences import DIVERGENCE_NAMES, FDivergence, get_divergence

__all__ = ["WASSERSTEIN", "CriticBudget", "independent_critic"]

WASSERSTEIN = "wasserstein"
# Numbers (rows × features) of the critic's evaluation pass at a time (bounds memory, not
# results): 65,536 rows of 2-D points, 1,365 64×64 RGB images.
_EVAL_CHUNK = 1 << 24


@dataclass(frozen=True)
class CriticBudget:
    """How long and how the independent critic trains (Adam; the estimate uses the EMA critic)."""

    steps: int = 1000  # critic updates, each on a fresh minibatch of data and of model samples
    batch_size: int = 512  # data points per step, and as many model samples
    lr: float = 1e-3  # Adam learning rate
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas (the usual GAN choice)
    ema: float = 0.99  # decay of the exponential moving average of the critic's weights
    gradient_penalty: float = 10.0  # λ of the gradient penalty, used by 'wasserstein' only
    # penalise only ‖∇V‖ > 1 (Petzka et al. 2018); False: the two-sided (‖∇V‖ − 1)² of WGAN-GP,
    # which in 1-D traps a critic that starts with the wrong slope at V ≈ +x (estimate ≈ −W)
    one_sided: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"steps and batch_size must be ≥ 1, got {self.steps} and {self.batch_size}"
            )
        if not self.lr > 0 or not 0.0 <= self.ema < 1.0 or self.gradient_penalty < 0:
            raise ValueError(
                f"need lr > 0, 0 ≤ ema < 1 and gradient_penalty ≥ 0, got lr={self.lr}, "
                f"ema={self.ema}, gradient_penalty={self.gradient_penalty}"
            )


def _terms(row: FDivergence | None, v_real: Tensor, v_fake: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample terms a_i (data) and b_j (model) whose means give the estimate E a − E b."""
    if row is None:  # Wasserstein: E_p V − E_q V
        return v_real, v_fake
    return row.activation(v_real), row.conjugate_activation(v_fake)


def _gradient_penalty(
    critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator, one_sided: bool
) -> Tensor:
    """E(‖∇V(x̃)‖ − 1)² at x̃ = εx + (1 − ε)x̂, ε ~ U(0, 1) (Gulrajani et al. 2017, eq. 3), or with
    `one_sided` E max(0, ‖∇V(x̃)‖ − 1)² (Petzka, Fischer & Lukovnicov 2018, eq. 8)."""
    shape = (len(real),) + (1,) * (real.ndim - 1)  # one ε per point or image
    eps = torch.rand(shape, generator=generator, device=generator.device, dtype=real.dtype)
    eps = eps.to(real.device)
    between = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
    excess = grad.flatten(1).norm(dim=1) - 1.0
    return (excess.clamp(min=0.0) if one_sided else excess).square().mean()


def _critic_values(critic: nn.Module, x: Tensor) -> Tensor:
    rows = max(1, _EVAL_CHUNK // max(1, x[0].numel()))
    return torch.cat([critic(chunk) for chunk in x.split(rows)])


def _estimate(
    row: FDivergence | None, critic: nn.Module, real: Tensor, fake: Tensor
) -> tuple[float, float]:
    """The bound E a − E b on `real` vs `fake`, and its standard error √(var a / n + var b / m)."""
    with torch.no_grad():
        a, b = _terms(row, _critic_values(critic, real), _critic_values(critic, fake))
        a, b = a.double(), b.double()
        value = a.mean() - b.mean()
        var = a.var(unbiased=True) / len(a) + b.var(unbiased=True) / len(b)
    return float(value), math.sqrt(float(var))


def _fresh_critic(make_critic: Callable[[], nn.Module], generator: torch.Generator) -> nn.Module:
    """Build the critic with its initial weights drawn from a seed taken from `generator`.

    The global RNG is forked, so the caller's global random state is left untouched and the result
    depends on `generator` alone (for critics that initialise on the CPU).
    """
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_critic()


def independent_critic(
    divergence: str,
    real: Tensor,
    sample_model: Callable[[int, torch.Generator], Tensor],
    make_critic: Callable[[], nn.Module],
    budget: CriticBudget,
    generator: torch.Generator,
    pi: float | None = None,
) -> dict[str, float]:
    """Train a fresh critic on the first half of `real` against fresh model samples; report its
    bound on the second half (Gulrajani, Raffel & Metz 2018; Im et al. 2018).

    `divergence`: any catalogue row (``get_divergence``; ``js_pi`` needs `pi`) or ``"wasserstein"``
    (gradient-penalty critic, estimate E_p V − E_q V). `real`: held-out data (n, d), or images
    (n, C, H, W), n ≥ 4, that the model never saw. `sample_model(n, generator)`: n fresh model
    samples, shaped as `real`. `make_critic()`: a new critic x (n, ...) -> (n,), built under a
    seed drawn from `generator`.

    Returns ``estimate`` (the EMA critic's bound on the held-out half vs as many fresh model
    samples), ``train_estimate`` (the same on the training half), ``stderr`` (of ``estimate``, from
    the per-sample terms: √(var_p/n + var_q/m)), ``steps``, ``n_train``, ``n_test``.
    """
    if divergence != WASSERSTEIN and divergence not in DIVERGENCE_NAMES:
        raise ValueError(
            f"unknown divergence {divergence!r}; allowed: {', '.join(DIVERGENCE_NAMES)}, "
            f"{WASSERSTEIN}"
        )
    row = None if divergence == WASSERSTEIN else get_divergence(divergence, pi)
    if real.ndim < 2 or len(real) < 4:
        raise ValueError(f"real must have shape (n, d, ...) with n ≥ 4, got {tuple(real.shape)}")
    critic = _fresh_critic(make_critic, generator).to(real.device)
    dtype = next(critic.parameters()).dtype
    real = real.detach().to(dtype)
    n_train = len(real) // 2
    train, test = real[:n_train], real[n_train:]

    def fresh_samples(n: int) -> Tensor:
        with torch.no_grad():
            return sample_model(n, generator).detach().to(device=real.device, dtype=real.dtype)

    average = AveragedModel(critic, multi_avg_fn=get_ema_multi_avg_fn(budget.ema), use_buffers=True)
    optimiser = torch.optim.Adam(critic.parameters(), lr=budget.lr, betas=budget.betas)
    batch = budget.batch_size
    critic.train()
    for _ in range(budget.steps):
        index = torch.randint(n_train, (batch,), generator=generator, device=generator.device)
        x = train[index.to(real.device)]
        x_hat = fresh_samples(batch)
        v = critic(torch.cat([x, x_hat]))
        a, b = _terms(row, v[:batch], v[batch:])
        # critic: maximise E_p[g_f(V)] − E_q[f*(g_f(V))]  (Wasserstein: E_p V − E_q V − λ·GP)
        loss = b.mean() - a.mean()
        if row is None and budget.gradient_penalty > 0:
            loss = loss + budget.gradient_penalty * _gradient_penalty(
                critic, x, x_hat, generator, budget.one_sided
            )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        average.update_parameters(critic)

    average.eval()
    estimate, stderr = _estimate(row, average, test, fresh_samples(len(test)))
    train_estimate, _ = _estimate(row, average, train, fresh_samples(n_train))
    return {
        "estimate": estimate,
        "train_estimate": train_estimate,
        "stderr": stderr,
        "steps": budget.steps,
        "n_train": n_train,
        "n_test": len(test),
    }
