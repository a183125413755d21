"""The f-divergence family as data: one :class:`FDivergence` row per divergence.

Convention (Nowozin, Cseke & Tomioka 2016, "f-GAN", eq. 2): for data P and model Q,

    D_f(P‖Q) = ∫ q(x) f(p(x) / q(x)) dx,

with a convex generator f, f(1) = 0, and u = p/q. The variational bound (eq. 4-6) is

    D_f(P‖Q) ≥ sup_T E_P[T(x)] − E_Q[f*(T(x))],   T = g_f(V), optimum T*(x) = f'(p(x)/q(x)),

where f* is the Fenchel conjugate and g_f the output activation of Table 2. Conventions pinned here:

* ``kl`` is KL(P‖Q) (maximum likelihood), ``reverse_kl`` is KL(Q‖P).
* ``js`` is the true Jensen–Shannon divergence in nats, ½KL(P‖M) + ½KL(Q‖M), M = (P + Q)/2, so
  0 ≤ JS ≤ log 2. This is *half* the f-GAN table's "Jensen-Shannon" row.
* ``gan`` is the f-GAN table's GAN row, f(u) = u log u − (u + 1) log(u + 1), whose value is
  2·JS − log 4. It is the one row with f(1) = −log 4 ≠ 0 (its variational bound is then exactly the
  original GAN value E_P log D + E_Q log(1 − D) with D = σ(V)).
* ``squared_hellinger`` is ∫(√p − √q)² (no ½); ``total_variation`` is ½∫|p − q| ∈ [0, 1].
* ``triangular`` is the triangular discrimination ∫(p − q)²/(p + q) ∈ [0, 2] (the least-squares
  GAN's value).
* ``js_pi(π)`` is Huszár's (2015) JS_π(P‖Q) = π KL(P‖M) + (1 − π) KL(Q‖M), M = πP + (1 − π)Q;
  ``js_pi(0.5)`` equals ``js``.

Outside its domain every conjugate returns +inf (its true value), never NaN.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

__all__ = [
    "DIVERGENCES",
    "DIVERGENCE_NAMES",
    "FDivergence",
    "get_divergence",
    "js_pi",
    "pinned",
]

_LOG2 = math.log(2.0)
_INF = math.inf


@dataclass(frozen=True)
class FDivergence:
    """One row of the f-GAN tables (Nowozin et al. 2016, Tables 1 and 2).

    ``perspective(log_p, log_q)`` is q f(p/q) computed from log-densities; it is the integrand of
    D_f(P‖Q) and handles p or q = 0 (log = −inf) and huge log-ratios by their limits (never NaN
    for log-densities in [−inf, log of the dtype's largest number]; +inf where the integrand is).
    ``conjugate_activation(v)`` is f*(g_f(v)) fused so that it stays finite for all real v.
    ``f_prime`` gives the optimal critic T*(x) = f'(p(x)/q(x)), and ``critic_at`` the raw output
    V that gives it at a log ratio (to bound the ratio a critic implies). ``power_tails`` marks
    the rows whose integrand grows like a power of the density ratio (the χ² rows: p²/q, q²/p),
    for which D_f between two Gaussians is +inf when one's tails are too light against the
    other's. ``kinked`` marks f with a kink at u = 1 (total variation: ½|u − 1|), whose integrand
    |p − q| is not smooth where p = q.
    """

    name: str
    f: Callable[[Tensor], Tensor]
    conjugate: Callable[[Tensor], Tensor]
    activation: Callable[[Tensor], Tensor]
    f_prime_at_1: float
    perspective: Callable[[Tensor, Tensor], Tensor]
    conjugate_activation: Callable[[Tensor], Tensor]
    f_prime: Callable[[Tensor], Tensor]
    power_tails: bool = False
    kinked: bool = False
    # The optimal raw critic output V*(ℓ) = g_f⁻¹(f'(e^ℓ)) at the log density ratio ℓ = log p/q
    # (increasing in ℓ); None where it is not finite (total variation's step).
    critic_at: Callable[[float], float] | None = None
    # The first variation of D_f(P‖Q) in q at the log ratio ℓ: f(u) − u f'(u) = −f*(f'(u)),
    # u = e^ℓ, in a closed form that does not overflow. A model step that pushes its samples
    # down this function of a fixed log ratio descends D_f (Poole et al. 2016; `first_variation`
    # of the ratio a classifier's logit estimates).
    first_variation: Callable[[Tensor], Tensor] | None = None


# ---------------------------------------------------------------------------------------------
# helpers


def _softplus(x: Tensor) -> Tensor:
    """log(1 + e^x) to full precision (``F.softplus`` turns linear above x = 20, off by e^{−x})."""
    return torch.logaddexp(x, x.new_zeros(()))


def _restrict(t: Tensor, inside: Tensor, value: Callable[[Tensor], Tensor], safe: float) -> Tensor:
    """``value(t)`` where ``inside``, +inf elsewhere; ``value`` only ever sees in-domain inputs."""
    t_safe = torch.where(inside, t, torch.full_like(t, safe))
    return torch.where(inside, value(t_safe), torch.full_like(t, _INF))


def _with_limits(
    core: Callable[[Tensor, Tensor], Tensor], f_at_0: float, slope_at_inf: float
) -> Callable[[Tensor, Tensor], Tensor]:
    """Wrap q f(p/q) for finite log-densities with its limits when p or q is exactly zero.

    p = 0 < q gives q f(0+); q = 0 < p gives p lim_{u→∞} f(u)/u; p = q = 0 gives 0.
    """

    def perspective(log_p: Tensor, log_q: Tensor) -> Tensor:
        log_p, log_q = torch.broadcast_tensors(log_p, log_q)
        p_zero = log_p == -_INF
        q_zero = log_q == -_INF
        either = p_zero | q_zero
        # Benign stand-ins so that neither value nor gradient of ``core`` is NaN where unused.
        a = torch.where(either, torch.zeros_like(log_p), log_p)
        b = torch.where(either, torch.zeros_like(log_q), log_q)
        out = core(a, b)
        if math.isinf(f_at_0):
            only_q = torch.full_like(out, f_at_0)
        else:
            only_q = torch.exp(torch.where(q_zero, torch.zeros_like(log_q), log_q)) * f_at_0
        if math.isinf(slope_at_inf):
            only_p = torch.full_like(out, slope_at_inf)
        else:
            only_p = torch.exp(torch.where(p_zero, torch.zeros_like(log_p), log_p)) * slope_at_inf
        out = torch.where(p_zero & ~q_zero, only_q, out)
        out = torch.where(q_zero & ~p_zero, only_p, out)
        return torch.where(p_zero & q_zero, torch.zeros_like(out), out)

    return perspective


def _split(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """d = a − b, and its parts clamped to d ≤ 0 and d ≥ 0 (each branch sees a safe value)."""
    d = a - b
    return d, d.clamp(max=0.0), d.clamp(min=0.0)


def _pearson_core(a: Tensor, b: Tensor) -> Tensor:
    """(p − q)²/q: q (e^d − 1)² for p ≤ q, exp(2a − b)(1 − e^{−d})² for p > q (no overflow of u)."""
    d, d_lo, d_hi = _split(a, b)
    low = torch.exp(b) * torch.expm1(d_lo).square()
    high = torch.exp(a + d_hi) * torch.expm1(-d_hi).square()
    return torch.where(d <= 0, low, high)


def _hellinger_core(a: Tensor, b: Tensor) -> Tensor:
    """(√p − √q)² = q (e^{d/2} − 1)² for p ≤ q, p (1 − e^{−d/2})² otherwise."""
    d, d_lo, d_hi = _split(a, b)
    low = torch.exp(b) * torch.expm1(0.5 * d_lo).square()
    high = torch.exp(a) * torch.expm1(-0.5 * d_hi).square()
    return torch.where(d <= 0, low, high)


def _tv_core(a: Tensor, b: Tensor) -> Tensor:
    """½|p − q| = ½ q (1 − e^d) for p ≤ q, ½ p (1 − e^{−d}) otherwise."""
    d, d_lo, d_hi = _split(a, b)
    low = -torch.exp(b) * torch.expm1(d_lo)
    high = -torch.exp(a) * torch.expm1(-d_hi)
    return 0.5 * torch.where(d <= 0, low, high)


def _mixture_core(
    weight_p: float, weight_q: float, log_mix_p: float, log_mix_q: float
) -> Callable[[Tensor, Tensor], Tensor]:
    """w_p p log(p/m) + w_q q log(q/m) with log m = logaddexp(a + log_mix_p, b + log_mix_q)."""

    def core(a: Tensor, b: Tensor) -> Tensor:
        log_m = torch.logaddexp(a + log_mix_p, b + log_mix_q)
        return weight_p * torch.exp(a) * (a - log_m) + weight_q * torch.exp(b) * (b - log_m)

    return core


def _log_lambert_w_exp(y: Tensor, iterations: int = 8) -> Tensor:
    """s = log W(e^y), i.e. the root of e^s + s = y, without ever forming e^y.

    Newton's method on the convex increasing h(s) = e^s + s − y, started above the root (s₀ = y for
    y ≤ 1, s₀ = log y otherwise), converges monotonically and quadratically. The iterations run
    without autograd; a final Newton step with autograd gives the exact derivative 1/(1 + e^s).
    """
    with torch.no_grad():
        s = torch.where(y <= 1.0, y, torch.log(y.clamp(min=1.0)))
        for _ in range(iterations):
            s = s - (torch.exp(s) + s - y) / (torch.exp(s) + 1.0)
    return s - (torch.exp(s) + s - y) / (torch.exp(s) + 1.0)


def _jeffrey_conjugate(t: Tensor) -> Tensor:
    """f*(t) = W(e^{1−t}) + 1/W(e^{1−t}) + t − 2, written as 1/w − log w − 1 with w = W(e^{1−t}).

    (w + log w = 1 − t eliminates t; this form has no cancellation between w and t.)
    """
    s = _log_lambert_w_exp(1.0 - t)
    return torch.expm1(-s) - s


# ---------------------------------------------------------------------------------------------
# rows (Nowozin et al. 2016, Tables 1 and 2)


def _kl() -> FDivergence:
    """KL(P‖Q): f(u) = u log u, g_f(v) = v, f*(t) = exp(t − 1)."""
    return FDivergence(
        name="kl",
        f=lambda u: torch.xlogy(u, u),
        conjugate=lambda t: torch.exp(t - 1.0),
        activation=lambda v: v,
        f_prime_at_1=1.0,
        perspective=_with_limits(lambda a, b: torch.exp(a) * (a - b), 0.0, _INF),
        conjugate_activation=lambda v: torch.exp(v - 1.0),
        f_prime=lambda u: torch.log(u) + 1.0,
        critic_at=lambda r: r + 1.0,
        first_variation=lambda ell: -torch.exp(ell),
    )


def _reverse_kl() -> FDivergence:
    """KL(Q‖P): f(u) = −log u, g_f(v) = −exp(−v), f*(t) = −1 − log(−t) on t < 0."""
    return FDivergence(
        name="reverse_kl",
        f=lambda u: -torch.log(u),
        conjugate=lambda t: _restrict(t, t < 0, lambda s: -1.0 - torch.log(-s), -1.0),
        activation=lambda v: -torch.exp(-v),
        f_prime_at_1=-1.0,
        perspective=_with_limits(lambda a, b: torch.exp(b) * (b - a), _INF, 0.0),
        conjugate_activation=lambda v: v - 1.0,
        f_prime=lambda u: -1.0 / u,
        critic_at=lambda r: r,
        first_variation=lambda ell: 1.0 - ell,
    )


def _pearson() -> FDivergence:
    """Pearson χ²(P‖Q): f(u) = (u − 1)², g_f(v) = v, f*(t) = t²/4 + t."""
    return FDivergence(
        name="pearson",
        f=lambda u: (u - 1.0).square(),
        conjugate=lambda t: 0.25 * t.square() + t,
        activation=lambda v: v,
        f_prime_at_1=0.0,
        perspective=_with_limits(_pearson_core, 1.0, _INF),
        conjugate_activation=lambda v: 0.25 * v.square() + v,
        f_prime=lambda u: 2.0 * (u - 1.0),
        power_tails=True,
        critic_at=lambda r: 2.0 * math.expm1(r),
        first_variation=lambda ell: -torch.expm1(2.0 * ell),
    )


def _neyman() -> FDivergence:
    """Neyman χ²(P‖Q) = Pearson χ²(Q‖P): f(u) = (1 − u)²/u, g_f(v) = 1 − e^{−v},
    f*(t) = 2 − 2√(1 − t) on t ≤ 1."""
    return FDivergence(
        name="neyman",
        f=lambda u: (1.0 - u).square() / u,
        conjugate=lambda t: _restrict(t, t <= 1, lambda s: 2.0 - 2.0 * torch.sqrt(1.0 - s), 0.0),
        activation=lambda v: -torch.expm1(-v),
        f_prime_at_1=0.0,
        perspective=_with_limits(lambda a, b: _pearson_core(b, a), _INF, 1.0),
        conjugate_activation=lambda v: 2.0 - 2.0 * torch.exp(-0.5 * v),
        f_prime=lambda u: 1.0 - u.reciprocal().square(),
        power_tails=True,
        critic_at=lambda r: 2.0 * r,
        first_variation=lambda ell: 2.0 * torch.expm1(-ell),
    )


def _squared_hellinger() -> FDivergence:
    """Squared Hellinger ∫(√p − √q)²: f(u) = (√u − 1)², g_f(v) = 1 − e^{−v}, f*(t) = t/(1 − t)."""
    return FDivergence(
        name="squared_hellinger",
        f=lambda u: (torch.sqrt(u) - 1.0).square(),
        conjugate=lambda t: _restrict(t, t < 1, lambda s: s / (1.0 - s), 0.0),
        activation=lambda v: -torch.expm1(-v),
        f_prime_at_1=0.0,
        perspective=_with_limits(_hellinger_core, 1.0, 1.0),
        conjugate_activation=torch.expm1,
        f_prime=lambda u: 1.0 - torch.rsqrt(u),
        critic_at=lambda r: 0.5 * r,
        first_variation=lambda ell: -torch.expm1(0.5 * ell),
    )


def _jeffrey() -> FDivergence:
    """Jeffrey KL(P‖Q) + KL(Q‖P): f(u) = (u − 1) log u, g_f(v) = v,
    f*(t) = W(e^{1−t}) + 1/W(e^{1−t}) + t − 2 (W: Lambert W)."""
    return FDivergence(
        name="jeffrey",
        f=lambda u: (u - 1.0) * torch.log(u),
        conjugate=_jeffrey_conjugate,
        activation=lambda v: v,
        f_prime_at_1=0.0,
        perspective=_with_limits(lambda a, b: (torch.exp(a) - torch.exp(b)) * (a - b), _INF, _INF),
        conjugate_activation=_jeffrey_conjugate,
        f_prime=lambda u: torch.log(u) + 1.0 - u.reciprocal(),
        critic_at=lambda r: r + 1.0 - math.exp(-r),
        first_variation=lambda ell: -ell - torch.expm1(ell),
    )


def _js_conjugate(t: Tensor) -> Tensor:
    # −½ log(2 − e^{2t}) = −½ [log 2 + log(1 − e^{2t − log 2})]
    return _restrict(
        t,
        t < 0.5 * _LOG2,
        lambda s: -0.5 * (_LOG2 + torch.log(-torch.expm1(2.0 * s - _LOG2))),
        0.0,
    )


def _js() -> FDivergence:
    """Jensen–Shannon in nats (half the f-GAN table's row):
    f(u) = ½[u log u − (u + 1) log((u + 1)/2)], g_f(v) = ½(log 2 − softplus(−v)),
    f*(t) = −½ log(2 − e^{2t}) on t < ½ log 2."""
    return FDivergence(
        name="js",
        f=lambda u: 0.5 * (torch.xlogy(u, u) - (u + 1.0) * (torch.log1p(u) - _LOG2)),
        conjugate=_js_conjugate,
        activation=lambda v: 0.5 * (_LOG2 - _softplus(-v)),
        f_prime_at_1=0.0,
        perspective=_with_limits(_mixture_core(0.5, 0.5, -_LOG2, -_LOG2), 0.5 * _LOG2, 0.5 * _LOG2),
        conjugate_activation=lambda v: 0.5 * (_softplus(v) - _LOG2),
        f_prime=lambda u: 0.5 * (_LOG2 + torch.log(u) - torch.log1p(u)),
        critic_at=lambda r: r,
        first_variation=lambda ell: 0.5 * (_LOG2 - _softplus(ell)),
    )


def _gan() -> FDivergence:
    """GAN row: f(u) = u log u − (u + 1) log(u + 1) (so D_f = 2·JS − log 4 and f(1) = −log 4),
    g_f(v) = −softplus(−v) = log σ(v), f*(t) = −log(1 − e^t) on t < 0."""
    return FDivergence(
        name="gan",
        f=lambda u: torch.xlogy(u, u) - (u + 1.0) * torch.log1p(u),
        conjugate=lambda t: _restrict(t, t < 0, lambda s: -torch.log(-torch.expm1(s)), -1.0),
        activation=lambda v: -_softplus(-v),
        f_prime_at_1=-_LOG2,
        perspective=_with_limits(_mixture_core(1.0, 1.0, 0.0, 0.0), 0.0, 0.0),
        conjugate_activation=_softplus,
        f_prime=lambda u: torch.log(u) - torch.log1p(u),
        critic_at=lambda r: r,
        first_variation=lambda ell: -_softplus(ell),
    )


def _total_variation() -> FDivergence:
    """Total variation ½∫|p − q|: f(u) = ½|u − 1|, g_f(v) = ½ tanh(v), f*(t) = t on |t| ≤ ½."""
    return FDivergence(
        name="total_variation",
        f=lambda u: 0.5 * (u - 1.0).abs(),
        conjugate=lambda t: _restrict(t, t.abs() <= 0.5, lambda s: s, 0.0),
        activation=lambda v: 0.5 * torch.tanh(v),
        f_prime_at_1=0.0,
        perspective=_with_limits(_tv_core, 0.5, 0.5),
        conjugate_activation=lambda v: 0.5 * torch.tanh(v),
        f_prime=lambda u: 0.5 * torch.sign(u - 1.0),
        kinked=True,
        first_variation=lambda ell: -0.5 * torch.sign(ell),
    )


def _triangular_core(a: Tensor, b: Tensor) -> Tensor:
    """(p − q)²/(p + q): q (e^d − 1)²/(1 + e^d) if p ≤ q, else p (1 − e^{−d})²/(1 + e^{−d})."""
    d, d_lo, d_hi = _split(a, b)
    low = torch.exp(b) * torch.expm1(d_lo).square() / (1.0 + torch.exp(d_lo))
    high = torch.exp(a) * torch.expm1(-d_hi).square() / (1.0 + torch.exp(-d_hi))
    return torch.where(d <= 0, low, high)


def _triangular_conjugate(t: Tensor) -> Tensor:
    """f*(t) = 4 − t − 4√(1 − t) on −3 ≤ t ≤ 1 (the supremum at u = 2/√(1 − t) − 1), −1 below −3
    (the supremum at u = 0), +inf above 1."""

    def inside(s: Tensor) -> Tensor:
        return torch.where(s < -3.0, -torch.ones_like(s), 4.0 - s - 4.0 * torch.sqrt(1.0 - s))

    return _restrict(t, t <= 1, inside, 0.0)


def _triangular() -> FDivergence:
    """Triangular discrimination (Vincze–Le Cam) ∫(p − q)²/(p + q): f(u) = (u − 1)²/(u + 1),
    g_f(v) = 1 − 4σ(−v)² (so V* = log p/q), f*(t) = 4 − t − 4√(1 − t) on −3 ≤ t ≤ 1.

    It is the Pearson χ² of P + Q against 2Q, the divergence whose value Mao et al.'s (2017)
    least-squares game takes with the coding a = −1, b = 1 (`objectives.adversarial.LeastSquares`):
    with D = tanh(V/2), g_f(V) = 2D − D² and f*(g_f(V)) = 2D + D², so the bound is
    2 − E_p(D − 1)² − E_q(D + 1)². Bounded: 0 ≤ ∫(p − q)²/(p + q) ≤ 2.
    """

    def conjugate_activation(v: Tensor) -> Tensor:
        d = torch.tanh(0.5 * v)
        return d * (2.0 + d)

    return FDivergence(
        name="triangular",
        f=lambda u: (u - 1.0).square() / (u + 1.0),
        conjugate=_triangular_conjugate,
        activation=lambda v: 1.0 - 4.0 * torch.sigmoid(-v).square(),
        f_prime_at_1=0.0,
        perspective=_with_limits(_triangular_core, 1.0, 1.0),
        conjugate_activation=conjugate_activation,
        f_prime=lambda u: 1.0 - 4.0 / (u + 1.0).square(),
        critic_at=lambda r: r,
        first_variation=lambda ell: -conjugate_activation(ell),
    )


@functools.lru_cache(maxsize=256)
def js_pi(pi: float) -> FDivergence:
    """Huszár (2015) JS_π(P‖Q) = π KL(P‖M) + (1 − π) KL(Q‖M), M = πP + (1 − π)Q, as an f-divergence.

    f(u) = π u log u − (πu + 1 − π) log(πu + 1 − π), f'(u) = π log(u / (πu + 1 − π)),
    f*(t) = −(1 − π) log((1 − π e^{t/π}) / (1 − π)) on t < −π log π,
    g_f(v) = π(log σ(v) − log π), so that V* = log(πp / ((1 − π)q)) is the logit of a classifier
    with prior π on the data. JS_π/π → KL(P‖Q) as π → 0 and JS_π/(1 − π) → KL(Q‖P) as π → 1.
    """
    if isinstance(pi, bool) or not isinstance(pi, numbers.Real) or not 0.0 < float(pi) < 1.0:
        raise ValueError(
            f"js_pi needs 0 < pi < 1 (allowed: any float strictly between 0 and 1), got {pi!r}"
        )
    pi = float(pi)
    rho = 1.0 - pi
    log_pi, log_rho = math.log(pi), math.log(rho)

    def f(u: Tensor) -> Tensor:
        m = pi * u + rho
        return pi * torch.xlogy(u, u) - m * torch.log(m)

    def conjugate(t: Tensor) -> Tensor:
        # 1 − π e^{t/π} = −expm1(t/π + log π)
        return _restrict(
            t,
            t < -pi * log_pi,
            lambda s: -rho * (torch.log(-torch.expm1(s / pi + log_pi)) - log_rho),
            -1.0,
        )

    return FDivergence(
        name=f"js_pi_{pi:g}",
        f=f,
        conjugate=conjugate,
        activation=lambda v: pi * (-_softplus(-v) - log_pi),
        f_prime_at_1=0.0,
        perspective=_with_limits(
            _mixture_core(pi, rho, log_pi, log_rho), -rho * log_rho, -pi * log_pi
        ),
        conjugate_activation=lambda v: rho * (_softplus(v) + log_rho),
        f_prime=lambda u: pi * (torch.log(u) - torch.log(pi * u + rho)),
        critic_at=lambda r: r + log_pi - log_rho,
        first_variation=lambda ell: (
            -rho * torch.logaddexp(ell + log_pi, torch.full_like(ell, log_rho))
        ),
    )


DIVERGENCES: Mapping[str, FDivergence] = MappingProxyType(
    {
        row.name: row
        for row in (
            _kl(),
            _reverse_kl(),
            _pearson(),
            _neyman(),
            _squared_hellinger(),
            _jeffrey(),
            _js(),
            _gan(),
            _total_variation(),
            _triangular(),
        )
    }
)
"""The fixed rows, by name."""

DIVERGENCE_NAMES: tuple[str, ...] = (*DIVERGENCES, "js_pi")
"""Every name :func:`get_divergence` accepts."""


def pinned(row: FDivergence) -> FDivergence:
    """The divergence that minimising `row` minimises, in the pinned convention: the ``gan`` row's
    value is 2·JS − log 4, so its minimiser is JS's and its target is ``js``; every other row is
    its own target."""
    return DIVERGENCES["js"] if row is DIVERGENCES["gan"] else row


def get_divergence(name: str, pi: float | None = None) -> FDivergence:
    """Look a row up by name; ``"js_pi"`` needs ``pi`` (ignored by every other row)."""
    if name == "js_pi":
        if pi is None:
            raise ValueError("divergence 'js_pi' needs pi with 0 < pi < 1")
        return js_pi(pi)
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; allowed: {', '.join(DIVERGENCE_NAMES)}")
    return DIVERGENCES[name]
