"""The f-divergence rows checked against the mathematics (Nowozin et al. 2016, Tables 1/2;
Huszár 2015 for JS_π): generator, derivative, Fenchel conjugate, activation and perspective."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from gandiv.divergences import (
    DIVERGENCE_NAMES,
    DIVERGENCES,
    FDivergence,
    get_divergence,
    js_pi,
)

PIS = (0.05, 0.3, 0.5, 0.9)
ROWS: list[FDivergence] = [*DIVERGENCES.values(), *(js_pi(pi) for pi in PIS)]
IDS = [row.name for row in ROWS]
STRICTLY_CONVEX = [row for row in ROWS if row.name != "total_variation"]

INF = math.inf
MpFunction = Callable[[Any], Any]  # a scalar function in mpmath's arbitrary precision


def f64(x: object) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def u_grid(n: int = 601) -> Tensor:
    return torch.logspace(-3, 3, n, dtype=torch.float64)


def autograd_f_prime(row: FDivergence, u: Tensor) -> tuple[Tensor, Tensor]:
    """(f(u), f'(u)) with f' from autograd, independent of the row's ``f_prime``."""
    u = u.clone().requires_grad_(True)
    fu = row.f(u)
    (grad,) = torch.autograd.grad(fu.sum(), u)
    return fu.detach(), grad


def pi_of(row: FDivergence) -> float | None:
    return float(row.name.removeprefix("js_pi_")) if row.name.startswith("js_pi_") else None


# Limits of the generator, derived by hand: f(0+) and lim_{u→∞} f(u)/u.
def expected_limits(row: FDivergence) -> tuple[float, float]:
    pi = pi_of(row)
    if pi is not None:
        return -(1 - pi) * math.log(1 - pi), -pi * math.log(pi)
    return {
        "kl": (0.0, INF),
        "reverse_kl": (INF, 0.0),
        "pearson": (1.0, INF),
        "neyman": (INF, 1.0),
        "squared_hellinger": (1.0, 1.0),
        "jeffrey": (INF, INF),
        "js": (0.5 * math.log(2), 0.5 * math.log(2)),
        "gan": (0.0, 0.0),
        "total_variation": (0.5, 0.5),
        "triangular": (1.0, 1.0),
    }[row.name]


# ------------------------------------------------------------------------------------ generator


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_f_vanishes_at_one(row: FDivergence) -> None:
    # every row is a proper f-divergence except the f-GAN table's GAN row (2·JS − log 4)
    expected = -math.log(4.0) if row.name == "gan" else 0.0
    assert float(row.f(f64(1.0))) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_f_prime_at_1_matches_autograd(row: FDivergence) -> None:
    _, grad = autograd_f_prime(row, f64([1.0]))
    assert float(grad) == pytest.approx(row.f_prime_at_1, abs=1e-14)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_f_prime_helper_matches_autograd(row: FDivergence) -> None:
    u = u_grid()
    _, grad = autograd_f_prime(row, u)
    torch.testing.assert_close(row.f_prime(u), grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_f_is_convex(row: FDivergence) -> None:
    u = u_grid().requires_grad_(True)
    (first,) = torch.autograd.grad(row.f(u).sum(), u, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), u)
    assert bool((second >= -1e-12).all())
    # and convex in the finite-difference sense, independent of autograd
    x = torch.linspace(1e-3, 50.0, 2001, dtype=torch.float64)
    fx = row.f(x)
    assert bool((fx[:-2] + fx[2:] - 2 * fx[1:-1] >= -1e-12).all())
    if row in STRICTLY_CONVEX:
        assert bool((second > 0).all())


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_generator_limits(row: FDivergence) -> None:
    at_0, slope_at_inf = expected_limits(row)
    f_small = float(row.f(f64(1e-30)))
    f_large = float(row.f(f64(1e30))) / 1e30
    if math.isinf(at_0):
        assert f_small > 10.0
    else:
        assert f_small == pytest.approx(at_0, abs=1e-12)
    if math.isinf(slope_at_inf):
        assert f_large > 10.0
    else:
        assert f_large == pytest.approx(slope_at_inf, abs=1e-12)


# ------------------------------------------------------------------------------------ conjugate


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_fenchel_young_equality(row: FDivergence) -> None:
    # f*(f'(u)) = u f'(u) − f(u), with f' from autograd
    u = u_grid()
    fu, t = autograd_f_prime(row, u)
    torch.testing.assert_close(row.conjugate(t), u * t - fu, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("row", STRICTLY_CONVEX, ids=[r.name for r in STRICTLY_CONVEX])
def test_conjugate_derivative_inverts_f_prime(row: FDivergence) -> None:
    # (f*)'(f'(u)) = u
    u = u_grid(201)
    _, t = autograd_f_prime(row, u)
    t = t.requires_grad_(True)
    (grad,) = torch.autograd.grad(row.conjugate(t).sum(), t)
    torch.testing.assert_close(grad, u, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_conjugate_is_the_supremum(row: FDivergence) -> None:
    # f*(t) = sup_{u>0} t u − f(u): never below any t u − f(u), and attained over a dense u grid
    u = torch.logspace(-6, 6, 20001, dtype=torch.float64)
    _, t_range = autograd_f_prime(row, f64([1e-3, 1e3]))
    t = torch.linspace(float(t_range[0]), float(t_range[1]), 97, dtype=torch.float64)
    brute = (t[:, None] * u[None, :] - row.f(u)[None, :]).max(dim=1).values
    conj = row.conjugate(t)
    assert bool((conj >= brute - 1e-9 * (1 + brute.abs())).all())
    torch.testing.assert_close(conj, brute, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_conjugate_is_never_nan(row: FDivergence) -> None:
    t = torch.linspace(-100.0, 100.0, 4001, dtype=torch.float64)
    conj = row.conjugate(t)
    assert not bool(conj.isnan().any())
    assert not bool((conj == -INF).any())


@pytest.mark.parametrize(
    ("name", "outside"),
    [
        ("reverse_kl", 0.5),
        ("neyman", 1.5),
        ("squared_hellinger", 1.0),
        ("js", 0.5 * math.log(2)),
        ("gan", 0.0),
        ("total_variation", 0.75),
        ("total_variation", -0.75),
        ("triangular", 1.5),
    ],
)
def test_conjugate_is_infinite_outside_its_domain(name: str, outside: float) -> None:
    assert float(DIVERGENCES[name].conjugate(f64(outside))) == INF


def test_js_pi_conjugate_domain_boundary() -> None:
    pi = 0.3
    boundary = -pi * math.log(pi)
    row = js_pi(pi)
    assert math.isfinite(float(row.conjugate(f64(boundary - 1e-6))))
    assert float(row.conjugate(f64(boundary))) == INF


def test_jeffrey_conjugate_large_arguments() -> None:
    # f*(t) = u + log u − 1 where f'(u) = log u + 1 − 1/u = t; e^{1−t} would overflow at t = −1000
    u = f64([1e-300, 1e-200, 1e-30, 1e-3, 1.0, 1e3, 1e100])
    t = torch.log(u) + 1 - 1 / u
    torch.testing.assert_close(
        DIVERGENCES["jeffrey"].conjugate(t), u + torch.log(u) - 1, rtol=1e-12, atol=1e-12
    )


# ----------------------------------------------------------------------------------- activation


@pytest.mark.parametrize("row", ROWS, ids=IDS)
@pytest.mark.parametrize(("dtype", "bound"), [(torch.float64, 30.0), (torch.float32, 10.0)])
def test_activation_maps_into_conjugate_domain(
    row: FDivergence, dtype: torch.dtype, bound: float
) -> None:
    # for large v the image of g_f rounds onto the domain's edge (|v| ≳ 36 in float64, ≳ 15 in
    # float32), which is why the fused conjugate_activation exists
    v = torch.linspace(-bound, bound, 2001, dtype=dtype)
    assert bool(torch.isfinite(row.conjugate(row.activation(v))).all())


@pytest.mark.parametrize("row", ROWS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conjugate_activation_is_finite(row: FDivergence, dtype: torch.dtype) -> None:
    v = torch.linspace(-50.0, 50.0, 2001, dtype=dtype).requires_grad_(True)
    out = row.conjugate_activation(v)
    assert bool(torch.isfinite(out).all())
    (grad,) = torch.autograd.grad(out.sum(), v)
    assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_conjugate_activation_is_the_composition(row: FDivergence) -> None:
    # where the composition is still well conditioned (the fused form is checked on [-50, 50]
    # against arbitrary precision below)
    v = torch.linspace(-15.0, 15.0, 2001, dtype=torch.float64)
    composed = row.conjugate(row.activation(v))
    assert bool(torch.isfinite(composed).all())
    torch.testing.assert_close(row.conjugate_activation(v), composed, rtol=1e-9, atol=1e-12)


def _mp_row(row: FDivergence) -> tuple[MpFunction, MpFunction]:
    """(g_f, f*) written again from the tables in arbitrary precision (mpmath's Lambert W)."""
    mpmath = pytest.importorskip("mpmath")
    exp, log, sqrt, half = mpmath.exp, mpmath.log, mpmath.sqrt, mpmath.mpf(0.5)
    pi = pi_of(row)
    if pi is not None:
        p = mpmath.mpf(pi)
        return (
            lambda v: p * (-log(1 + exp(-v)) - log(p)),
            lambda t: -(1 - p) * log((1 - p * exp(t / p)) / (1 - p)),
        )

    def jeffrey(t: Any) -> Any:
        w = mpmath.lambertw(exp(1 - t)).real
        return w + 1 / w + t - 2

    return {
        "kl": (lambda v: v, lambda t: exp(t - 1)),
        "reverse_kl": (lambda v: -exp(-v), lambda t: -1 - log(-t)),
        "pearson": (lambda v: v, lambda t: t * t / 4 + t),
        "neyman": (lambda v: 1 - exp(-v), lambda t: 2 - 2 * sqrt(1 - t)),
        "squared_hellinger": (lambda v: 1 - exp(-v), lambda t: t / (1 - t)),
        "jeffrey": (lambda v: v, jeffrey),
        "js": (
            lambda v: half * (log(2) - log(1 + exp(-v))),
            lambda t: -half * log(2 - exp(2 * t)),
        ),
        "gan": (lambda v: -log(1 + exp(-v)), lambda t: -log(1 - exp(t))),
        "total_variation": (lambda v: half * mpmath.tanh(v), lambda t: t),
        # f*(t) = 4 − t − 4√(1 − t) on −3 ≤ t ≤ 1; g_f(v) maps into (−3, 1)
        "triangular": (
            lambda v: 1 - 4 / (1 + exp(v)) ** 2,
            lambda t: 4 - t - 4 * sqrt(1 - t),
        ),
    }[row.name]


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_conjugate_and_fused_form_in_arbitrary_precision(row: FDivergence) -> None:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    g, conj = _mp_row(row)
    v = torch.linspace(-50.0, 50.0, 101, dtype=torch.float64)
    t_mp = [g(mpmath.mpf(x)) for x in v.tolist()]
    fused_ref = torch.tensor([float(conj(t)) for t in t_mp], dtype=torch.float64)
    torch.testing.assert_close(row.conjugate_activation(v), fused_ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        row.activation(v), torch.tensor([float(t) for t in t_mp], dtype=torch.float64)
    )
    # the conjugate itself, at the float64 points g_f(v) for v ≤ 10 (inside its domain by a margin
    # that keeps it well conditioned)
    t = row.activation(v[v <= 10.0])
    ref = torch.tensor([float(conj(mpmath.mpf(x))) for x in t.tolist()], dtype=torch.float64)
    torch.testing.assert_close(row.conjugate(t), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("row", [r for r in ROWS if r.name in ("js", "gan") or pi_of(r)])
def test_activation_makes_the_critic_a_classifier_logit(row: FDivergence) -> None:
    # T* = f'(p/q) = g_f(V*) with V* = log(π p / ((1 − π) q)) the logit of p(real | x) under a
    # class prior π (π = ½ for js and gan)
    pi = pi_of(row) or 0.5
    u = u_grid()
    logit = torch.log(u) + math.log(pi / (1 - pi))
    torch.testing.assert_close(row.activation(logit), row.f_prime(u), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------- perspective


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_perspective_matches_definition(row: FDivergence) -> None:
    gen = torch.Generator().manual_seed(0)
    log_p = torch.rand(500, generator=gen, dtype=torch.float64) * 10 - 5
    log_q = torch.rand(500, generator=gen, dtype=torch.float64) * 10 - 5
    log_p[:50] = log_q[:50]
    expected = torch.exp(log_q) * row.f(torch.exp(log_p - log_q))
    torch.testing.assert_close(row.perspective(log_p, log_q), expected, rtol=1e-10, atol=1e-12)
    for dtype in (torch.float32, torch.float64):
        out = row.perspective(log_p.to(dtype), log_q.to(dtype))
        assert out.dtype == dtype


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_perspective_limits_when_a_density_vanishes(row: FDivergence) -> None:
    at_0, slope_at_inf = expected_limits(row)
    other = f64([-800.0, -50.0, 0.0, 3.0])
    zero = torch.full_like(other, -INF)
    only_q = row.perspective(zero, other)  # p = 0 < q: q f(0+)
    only_p = row.perspective(other, zero)  # q = 0 < p: p lim f(u)/u
    for out, limit in ((only_q, at_0), (only_p, slope_at_inf)):
        if math.isinf(limit):
            assert bool((out == INF).all())
        else:
            torch.testing.assert_close(out, torch.exp(other) * limit, rtol=1e-12, atol=0.0)
    assert float(row.perspective(f64(-INF), f64(-INF))) == 0.0


def _mp_generator(row: FDivergence) -> MpFunction:
    """The generator written again in arbitrary precision, for reference values."""
    mpmath = pytest.importorskip("mpmath")
    log, sqrt = mpmath.log, mpmath.sqrt
    pi = pi_of(row)
    if pi is not None:
        pi_ = mpmath.mpf(pi)
        return lambda u: pi_ * u * log(u) - (pi_ * u + 1 - pi_) * log(pi_ * u + 1 - pi_)
    return {
        "kl": lambda u: u * log(u),
        "reverse_kl": lambda u: -log(u),
        "pearson": lambda u: (u - 1) ** 2,
        "neyman": lambda u: (1 - u) ** 2 / u,
        "squared_hellinger": lambda u: (sqrt(u) - 1) ** 2,
        "jeffrey": lambda u: (u - 1) * log(u),
        "js": lambda u: (u * log(u) - (u + 1) * log((u + 1) / 2)) / 2,
        "gan": lambda u: u * log(u) - (u + 1) * log(u + 1),
        "total_variation": lambda u: abs(u - 1) / 2,
        "triangular": lambda u: (u - 1) ** 2 / (u + 1),
    }[row.name]


EXTREME = [-1e4, -745.0, -700.0, -300.0, -30.0, -1e-9, 0.0, 1e-12, 5.0, 80.0, 700.0]


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_perspective_at_extreme_log_ratios(row: FDivergence) -> None:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    f = _mp_generator(row)
    a, b = torch.meshgrid(f64(EXTREME), f64(EXTREME), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    out = row.perspective(a, b)
    assert not bool(out.isnan().any())
    huge = 1e300
    for x, y, got in zip(a.tolist(), b.tolist(), out.tolist(), strict=True):
        p, q = mpmath.exp(x), mpmath.exp(y)
        ref = q * f(p / q)
        if abs(ref) > huge:
            assert got == INF or abs(got) > huge / 10, (x, y, got)
        else:
            # rounding of log p, log q (relative 1e-16) allows an error ~1e-14 (p + q)
            tol = 1e-9 * abs(ref) + 1e-14 * (p + q) + 1e-300
            assert abs(got - ref) <= tol, (x, y, got, float(ref))


@pytest.mark.parametrize("row", ROWS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_perspective_is_nan_free_with_finite_gradients(
    row: FDivergence, dtype: torch.dtype
) -> None:
    top = 700.0 if dtype == torch.float64 else 80.0
    values = [-INF, -1e4, -745.0, -700.0, -100.0, -1e-6, 0.0, 5.0, top]
    a, b = torch.meshgrid(
        torch.tensor(values, dtype=dtype), torch.tensor(values, dtype=dtype), indexing="ij"
    )
    a = a.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    out = row.perspective(a, b)
    assert not bool(out.isnan().any())
    finite = torch.isfinite(out)
    out.backward(finite.to(dtype))
    assert a.grad is not None and b.grad is not None
    assert bool(torch.isfinite(a.grad[finite]).all())
    assert bool(torch.isfinite(b.grad[finite]).all())


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_perspective_is_one_homogeneous(row: FDivergence) -> None:
    # q f(p/q) scales with (p, q): the Monte Carlo estimator relies on it
    gen = torch.Generator().manual_seed(1)
    log_p = torch.randn(200, generator=gen, dtype=torch.float64) * 3
    log_q = torch.randn(200, generator=gen, dtype=torch.float64) * 3
    shift = 7.5
    torch.testing.assert_close(
        row.perspective(log_p - shift, log_q - shift),
        math.exp(-shift) * row.perspective(log_p, log_q),
        rtol=1e-10,
        atol=1e-14,
    )


# -------------------------------------------------------------------------------------- js_pi


def test_js_pi_at_half_is_js() -> None:
    js, half = DIVERGENCES["js"], js_pi(0.5)
    u = u_grid()
    v = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    t = torch.linspace(-20, 0.34, 1001, dtype=torch.float64)
    log_p, log_q = torch.randn(
        2, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    for name in ("f", "f_prime"):
        torch.testing.assert_close(getattr(half, name)(u), getattr(js, name)(u))
    for name in ("activation", "conjugate_activation"):
        torch.testing.assert_close(getattr(half, name)(v), getattr(js, name)(v))
    torch.testing.assert_close(half.conjugate(t), js.conjugate(t))
    torch.testing.assert_close(half.perspective(log_p, log_q), js.perspective(log_p, log_q))
    assert half.f_prime_at_1 == js.f_prime_at_1


def test_js_pi_perspective_is_the_mixture_definition() -> None:
    # π p log(p/m) + (1 − π) q log(q/m), m = π p + (1 − π) q, written directly
    gen = torch.Generator().manual_seed(3)
    p = torch.rand(300, generator=gen, dtype=torch.float64) + 0.01
    q = torch.rand(300, generator=gen, dtype=torch.float64) + 0.01
    for pi in (0.01, 0.2, 0.7, 0.99):
        m = pi * p + (1 - pi) * q
        expected = pi * p * torch.log(p / m) + (1 - pi) * q * torch.log(q / m)
        torch.testing.assert_close(js_pi(pi).perspective(p.log(), q.log()), expected)


# ------------------------------------------------------------------------------------ registry


def test_names() -> None:
    expected = {
        "kl",
        "reverse_kl",
        "pearson",
        "neyman",
        "squared_hellinger",
        "jeffrey",
        "js",
        "gan",
        "total_variation",
        "triangular",
    }
    assert set(DIVERGENCES) == expected
    assert set(DIVERGENCE_NAMES) == expected | {"js_pi"}
    assert len(DIVERGENCE_NAMES) == len(set(DIVERGENCE_NAMES))
    for name, row in DIVERGENCES.items():
        assert row.name == name
        assert get_divergence(name) is row
    assert get_divergence("js_pi", 0.25).name == "js_pi_0.25"
    assert get_divergence("js_pi", 0.25).f_prime_at_1 == 0.0


def test_unknown_name_lists_the_allowed_names() -> None:
    with pytest.raises(ValueError, match="unknown divergence 'wasserstein'") as info:
        get_divergence("wasserstein")
    for name in DIVERGENCE_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("pi", [0.0, 1.0, -0.1, 1.5, math.nan, math.inf, True])
def test_bad_pi_is_rejected(pi: float) -> None:
    with pytest.raises(ValueError, match="0 < pi < 1"):
        js_pi(pi)
    with pytest.raises(ValueError, match="0 < pi < 1"):
        get_divergence("js_pi", pi)


def test_js_pi_needs_pi() -> None:
    with pytest.raises(ValueError, match="0 < pi < 1"):
        get_divergence("js_pi")


def test_rows_are_immutable() -> None:
    with pytest.raises(AttributeError):
        DIVERGENCES["kl"].name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        DIVERGENCES["other"] = DIVERGENCES["kl"]  # type: ignore[index]


# ------------------------------------------------------------------------ the optimal raw critic


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_critic_at_gives_the_optimal_critic_at_each_log_ratio(row: FDivergence) -> None:
    """g_f(V*(ℓ)) = f'(e^ℓ) (the optimal T at ratio e^ℓ), V* increasing; None only for the kink."""
    if row.kinked:
        assert row.critic_at is None  # ½·sign(u − 1) is a step: no finite raw output reaches it
        return
    assert row.critic_at is not None
    ratios = torch.linspace(-8.0, 8.0, 161, dtype=torch.float64)
    v = f64([row.critic_at(float(r)) for r in ratios])
    _, f_prime = autograd_f_prime(row, ratios.exp())
    assert torch.allclose(row.activation(v), f_prime, rtol=1e-9, atol=1e-9)
    assert bool((v.diff() > 0).all())


# ------------------------------------------------------------------------- first variation


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_first_variation_is_f_minus_u_f_prime(row: FDivergence) -> None:
    # f(u) − u f'(u) with f' from autograd, independent of the row's closed form
    u = u_grid()
    fu, grad = autograd_f_prime(row, u)
    assert row.first_variation is not None
    got = row.first_variation(torch.log(u))
    torch.testing.assert_close(got, fu - u * grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_first_variation_is_finite_at_extreme_log_ratios(
    row: FDivergence, dtype: torch.dtype
) -> None:
    # up to the largest log ratio whose e^{2ℓ} (Pearson's) the dtype holds
    top = 0.45 * math.log(torch.finfo(dtype).max)
    ell = torch.linspace(-top, top, 2001, dtype=dtype)
    assert row.first_variation is not None
    assert bool(torch.isfinite(row.first_variation(ell)).all())


def test_triangular_conjugate_below_its_kink_is_f_at_zero() -> None:
    # for t < −3 the supremum of ut − f(u) over u ≥ 0 is at u = 0: −f(0) = −1
    row = DIVERGENCES["triangular"]
    t = f64([-3.0, -5.0, -100.0])
    torch.testing.assert_close(row.conjugate(t), f64([-1.0, -1.0, -1.0]))
