"""The independent critic: a divergence estimated by critics trained from scratch on held-out data.

Gulrajani, Raffel & Metz (2018, "Towards GAN benchmarks which require generalization") and Im et
al. (2018, "Quantitatively evaluating GANs with divergences proposed for training") score a model
by training a fresh critic to tell held-out data from the model's samples.

For the f-divergences one critic V serves every row: it is trained by logistic regression of data
against model samples (the GAN row's bound, E_p log σ(V) + E_q log(1 − σ(V)), on balanced
batches), whose optimum is the log density ratio V* = log(p/q). Each row's estimate is Nowozin et
al.'s (2016, eq. 6) variational bound at the critic's ratio r̂ = e^V, T = f'(r̂):

    D_f(P‖Q) ≥ E_p[f'(r̂(x))] − E_q[f*(f'(r̂(x̂)))] = D_f(P‖Q) − E_q[B_f(r, r̂)],

a lower bound for any r̂, short of D_f by the mean Bregman divergence B_f(r, r̂) = f(r) − f(r̂) −
f'(r̂)(r − r̂) ≥ 0 of f: second order in the critic's error, so close to D_f for a good critic.
Training each row on its own bound instead (as a GAN trains its critic) is worse: the KL row's
conjugate e^{T−1} makes its gradients as heavy-tailed as its estimates, and on a 1-D mode-seeking
pair (KL 2.17) such critics' population bounds fell 3% to 27% short where the logistic critic's fell
0.1% to 0.5% short (1000 steps each; README, Evaluation).

For the Wasserstein distance the critic is a gradient-penalty critic (Gulrajani et al. 2017, eq. 3;
by default the one-sided penalty of Petzka et al. 2018):

    W₁(P, Q) ≈ max_V E_p V(x) − E_q V(x̂) − λ E_x̃ max(0, ‖∇V(x̃)‖ − 1)²,  x̃ on segments x → x̂.

The soft penalty lets the slope exceed 1: for a translation the penalised optimum is V = c⟨u, x⟩
with c = 1 + W/2λ, so the estimate is ≈ W(1 + W/2λ) (+5% at W = 1, λ = 10).

Cross-fitting: the held-out data is split in two; one critic trains on each half (against fresh
model samples) and scores the other half, which it never saw, so every held-out point enters the
estimate and no point is scored by a critic that trained on it. The model term uses fresh model
samples, which cost nothing but time: with many of them the estimate's noise is the data's.

Bounds of unbounded divergences (KL, χ²) stay far below large true values, which would need ~e^D
samples (McAllester & Stratos 2020): their model term f*(f'(r̂)) grows like r̂ (KL) or r̂² (Pearson
χ²) and is heavy-tailed where Q rarely visits P's mass.

The held-out data must be data the model never saw. A model that memorised its training set is
caught only if that set is disjoint from ``real``: a critic trained on fresh data against copies of
a finite training set learns the copies, and its held-out estimate stays clearly above zero, where a
model that generalises scores ≈ 0 (Gulrajani et al. 2018, §3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gandiv.divergences import DIVERGENCE_NAMES, FDivergence, get_divergence

__all__ = [
    "WASSERSTEIN",
    "CriticBudget",
    "bias_note",
    "critic_updates",
    "independent_critic",
    "independent_critics",
]

WASSERSTEIN = "wasserstein"
# Numbers (rows × features) of the critic's evaluation pass at a time (bounds memory, not
# results): 65,536 rows of 2-D points, 1,365 64×64 RGB images.
_EVAL_CHUNK = 1 << 24
# |log r̂| at most this in the bounds: every row's f'(r̂) and f*(f'(r̂)) are accurate in float64 up
# to here (JS's f'(r̂) → ½ log 2 loses digits beyond ~30). Any T gives a lower bound, so clamping
# keeps the estimate a bound; ratios beyond e^20 ≈ 5·10⁸ cannot be checked with samples anyway.
_MAX_LOG_RATIO = 20.0
_RATIO_TRAINING = get_divergence("gan")  # logistic regression: V* = log(p/q)


@dataclass(frozen=True)
class CriticBudget:
    """How long and how the independent critics train (Adam; the estimate uses EMA critics)."""

    steps: int = 1000  # updates of each critic, each on a fresh minibatch of data and of samples
    batch_size: int = 512  # data points per step, and as many model samples
    lr: float = 1e-3  # Adam learning rate
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas (the usual GAN choice)
    ema: float = 0.99  # decay of the exponential moving average of the critic's weights
    gradient_penalty: float = 10.0  # λ of the gradient penalty, used by 'wasserstein' only
    # penalise only ‖∇V‖ > 1 (Petzka et al. 2018); False: the two-sided (‖∇V‖ − 1)² of WGAN-GP,
    # which in 1-D traps a critic that starts with the wrong slope at V ≈ +x (estimate ≈ −W)
    one_sided: bool = True
    # fresh model samples in each critic's estimate (None: as many as the data points it scores)
    model_samples: int | None = 500_000

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
        if self.model_samples is not None and self.model_samples < 2:
            raise ValueError(f"model_samples must be ≥ 2 or None, got {self.model_samples}")


def _heavy_terms(row: FDivergence) -> list[str]:
    """The bound's terms that grow like r̂ or 1/r̂ or faster: the model term f*(f'(r̂)) as r̂ → ∞
    (KL, Jeffrey, Pearson χ²) and the data term f'(r̂) as r̂ → 0 (reverse KL, Jeffrey, Neyman χ²).
    Their means need samples where one distribution rarely goes and the other has mass."""
    big = torch.tensor([math.exp(_MAX_LOG_RATIO)], dtype=torch.float64)
    heavy = []
    if row.f_prime(1.0 / big).abs() >= 0.5 * big:
        heavy.append("data")
    if row.conjugate(row.f_prime(big)).abs() >= 0.5 * big:
        heavy.append("model")
    return heavy


def bias_note(divergence: str, pi: float | None = None) -> str:
    """Which way the truth lies from the estimate of `divergence`, in words."""
    if divergence == WASSERSTEIN:
        return (
            "either: high by up to W²/2λ from the soft gradient penalty (the critic's slope may "
            "exceed 1), low when the critic falls short of the optimum; stderr is the two-sided "
            "sampling error"
        )
    note = (
        "low: a variational lower bound at the critics' density ratio r̂, short of the divergence "
        "by E_q[B_f(p/q, r̂)] ≥ 0 (second order in the critic's error); stderr is the two-sided "
        "sampling error"
    )
    heavy = _heavy_terms(get_divergence(divergence, pi))
    if heavy:
        note += (
            f"; its {' and '.join(heavy)} term{'s grow' if len(heavy) > 1 else ' grows'} like r̂ "
            "or 1/r̂, heavy-tailed where one distribution has mass the other rarely visits: a "
            "typical estimate then lies above the bound's mean with too small a stderr, a rare "
            "one far below, and a large divergence stays far below (McAllester & Stratos 2020)"
        )
    return note


def _data_terms(row: FDivergence | None, v: Tensor) -> Tensor:
    """a_i = f'(r̂(x_i)) at r̂ = e^V (Wasserstein: V), float64."""
    if row is None:
        return v.double()
    return row.f_prime(torch.exp(v.double().clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)))


def _model_terms(row: FDivergence | None, v: Tensor) -> Tensor:
    """b_j = f*(f'(r̂(x̂_j))) (Wasserstein: V), float64; the estimate is E a − E b."""
    return _data_terms(row, v) if row is None else row.conjugate(_data_terms(row, v))


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
    with torch.no_grad():
        return torch.cat([critic(chunk) for chunk in x.split(rows)])


def _fresh_critic(make_critic: Callable[[], nn.Module], generator: torch.Generator) -> nn.Module:
    """Build the critic with its initial weights drawn from a seed taken from `generator`.

    The global RNG is forked, so the caller's global random state is left untouched and the result
    depends on `generator` alone (for critics that initialise on the CPU).
    """
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_critic()


@dataclass(frozen=True)
class _Fold:
    """One cross-fitted critic's values V on its held-out half, its training half and fresh model
    samples."""

    held_out: Tensor
    trained_on: Tensor
    model: Tensor


def _train_critic(
    wasserstein: bool,
    critic: nn.Module,
    train: Tensor,
    fresh_samples: Callable[[int], Tensor],
    budget: CriticBudget,
    generator: torch.Generator,
    progress: Callable[[], None] | None = None,
) -> nn.Module:
    """`critic` trained on `train` against fresh model samples; its EMA, in eval mode.
    `progress()` is called after each update."""
    average = AveragedModel(critic, multi_avg_fn=get_ema_multi_avg_fn(budget.ema), use_buffers=True)
    optimiser = torch.optim.Adam(critic.parameters(), lr=budget.lr, betas=budget.betas)
    batch = budget.batch_size
    critic.train()
    for _ in range(budget.steps):
        index = torch.randint(len(train), (batch,), generator=generator, device=generator.device)
        x = train[index.to(train.device)]
        x_hat = fresh_samples(batch)
        v = critic(torch.cat([x, x_hat]))
        if wasserstein:
            # critic: maximise E_p V − E_q V − λ·GP
            loss = v[batch:].mean() - v[:batch].mean()
            if budget.gradient_penalty > 0:
                loss = loss + budget.gradient_penalty * _gradient_penalty(
                    critic, x, x_hat, generator, budget.one_sided
                )
        else:
            # critic: maximise E_p log σ(V) + E_q log(1 − σ(V)), optimum V = log(p/q)
            row = _RATIO_TRAINING
            loss = row.conjugate_activation(v[batch:]).mean() - row.activation(v[:batch]).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        average.update_parameters(critic)
        if progress is not None:
            progress()
    return average.eval()


def _cross_fit(
    wasserstein: bool,
    real: Tensor,
    sample_model: Callable[[int, torch.Generator], Tensor],
    make_critic: Callable[[], nn.Module],
    budget: CriticBudget,
    generator: torch.Generator,
    progress: Callable[[], None] | None = None,
) -> list[_Fold]:
    """Two critics, each trained on one half of `real` and evaluated on the other."""
    rows = max(1, _EVAL_CHUNK // max(1, real[0].numel()))
    half = len(real) // 2
    folds = []
    for k in range(2):
        critic = _fresh_critic(make_critic, generator).to(real.device)
        dtype = next(critic.parameters()).dtype
        data = real.detach().to(dtype)
        train, held_out = (data[:half], data[half:]) if k == 0 else (data[half:], data[:half])

        def fresh_samples(n: int, dtype: torch.dtype = dtype) -> Tensor:
            with torch.no_grad():
                return sample_model(n, generator).detach().to(device=real.device, dtype=dtype)

        critic = _train_critic(
            wasserstein, critic, train, fresh_samples, budget, generator, progress
        )
        m = budget.model_samples or len(held_out)
        model = torch.cat(
            [_critic_values(critic, fresh_samples(min(rows, m - i))) for i in range(0, m, rows)]
        )
        folds.append(_Fold(_critic_values(critic, held_out), _critic_values(critic, train), model))
    return folds


def _report(
    row: FDivergence | None, folds: Sequence[_Fold], budget: CriticBudget
) -> dict[str, Any]:
    """The cross-fitted estimate of one divergence: each critic's E a − E b on the half it never
    saw, weighted by that half's size, with its standard error."""

    # (Wasserstein: each critic has its own additive constant, so the folds are combined, never
    # their terms)
    n = sum(len(fold.held_out) for fold in folds)
    estimate = train_estimate = variance = 0.0
    fold_estimates = []
    for fold in folds:
        a, b = _data_terms(row, fold.held_out), _model_terms(row, fold.model)
        a_train = _data_terms(row, fold.trained_on)
        weight = len(a) / n
        fold_estimates.append(float(a.mean() - b.mean()))
        estimate += weight * fold_estimates[-1]
        train_estimate += weight * float(a_train.mean() - b.mean())
        variance += weight**2 * float(a.var() / len(a) + b.var() / len(b))
    return {
        "estimate": estimate,
        "train_estimate": train_estimate,
        "stderr": math.sqrt(variance),
        "fold_estimates": fold_estimates,
        "steps": budget.steps,
        "n_train": len(folds[0].trained_on),
        "n_test": n,
        "model_samples": sum(len(fold.model) for fold in folds),
    }


def independent_critics(
    divergences: Sequence[str],
    real: Tensor,
    sample_model: Callable[[int, torch.Generator], Tensor],
    make_critic: Callable[[], nn.Module],
    budget: CriticBudget,
    generator: torch.Generator,
    pi: float | None = None,
    progress: Callable[[], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Estimate each of `divergences` with critics trained from scratch on held-out data,
    cross-fitted over its two halves (Gulrajani, Raffel & Metz 2018; Im et al. 2018).

    `divergences`: catalogue rows (``get_divergence``; ``js_pi`` needs `pi`) or ``"wasserstein"``.
    One pair of logistic critics serves every row; ``wasserstein`` trains its own pair of
    gradient-penalty critics. `real`: held-out data (n, d), or images (n, C, H, W), n ≥ 4, that the
    model never saw. `sample_model(n, generator)`: n fresh model samples, shaped as `real`.
    `make_critic()`: a new critic x (n, ...) -> (n,), built under a seed drawn from `generator`.

    Per divergence: ``estimate`` (each half scored by the EMA critic trained on the other, against
    ``budget.model_samples`` fresh model samples per critic), ``stderr`` (of ``estimate``, from the
    per-sample terms: √(var_p/n + var_q/m)), ``fold_estimates`` (each critic's alone),
    ``train_estimate`` (each critic on its own training half: above ``estimate`` when the critics
    overfit), ``bias`` (which way the truth lies), ``steps``, ``n_train`` (points per critic),
    ``n_test`` (points scored), ``model_samples`` (in all).

    `progress()`, if given, is called after every critic update: `critic_updates` of them in all.
    """
    rows: dict[str, FDivergence | None] = {}
    for name in divergences:
        if name != WASSERSTEIN and name not in DIVERGENCE_NAMES:
            raise ValueError(
                f"unknown divergence {name!r}; allowed: {', '.join(DIVERGENCE_NAMES)}, "
                f"{WASSERSTEIN}"
            )
        rows[name] = None if name == WASSERSTEIN else get_divergence(name, pi)
    if real.ndim < 2 or len(real) < 4:
        raise ValueError(f"real must have shape (n, d, ...) with n ≥ 4, got {tuple(real.shape)}")
    folds: dict[bool, list[_Fold]] = {}
    for wasserstein in sorted({row is None for row in rows.values()}):
        folds[wasserstein] = _cross_fit(
            wasserstein, real, sample_model, make_critic, budget, generator, progress
        )
    return {
        name: {**_report(row, folds[row is None], budget), "bias": bias_note(name, pi)}
        for name, row in rows.items()
    }


def critic_updates(divergences: Sequence[str], budget: CriticBudget) -> int:
    """The updates :func:`independent_critics` makes for `divergences`: `budget.steps` for each
    critic, two critics (one per half) for the logistic rows and two for ``wasserstein``."""
    pairs = len({name == WASSERSTEIN for name in divergences})
    return 2 * pairs * budget.steps


def independent_critic(
    divergence: str,
    real: Tensor,
    sample_model: Callable[[int, torch.Generator], Tensor],
    make_critic: Callable[[], nn.Module],
    budget: CriticBudget,
    generator: torch.Generator,
    pi: float | None = None,
) -> dict[str, Any]:
    """:func:`independent_critics` for one divergence."""
    return independent_critics(
        [divergence], real, sample_model, make_critic, budget, generator, pi
    )[divergence]
