"""Data on which plain maximum likelihood breaks: curves of zero width and noise-free ICA.

`Line` and `Circle` put their mass on a curve; with the default width 0 no density exists
(`degenerate`), and only objectives that need no density — the spread divergence, sample-based
objectives — can fit them. `ICA` is the deterministic ICA setting of Zhang et al. (2018, §5):
x = A s with independent Laplace sources s and a square mixing matrix A.

The composite Gauss–Legendre rule along a curve lives here too: a thickened curve's density is
its nodes convolved with a Gaussian kernel (`gandiv.data.spread`), and the spread densities of
`gandiv.evaluation.spread` integrate along data curves and generator curves by the same rule.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from gandiv.data.spread import SpreadKernel, atoms_log_prob, atoms_log_prob_grid, laplace_sample
from gandiv.data.toy import ToyData

__all__ = [
    "ICA",
    "Circle",
    "Curve",
    "Line",
    "amari_distance",
    "composite_gauss_legendre",
    "curve_panels",
    "random_mixing",
]

# Unit-variance Laplace sources: scale 1/√2.
LAPLACE_SCALE = 1 / math.sqrt(2.0)
# Largest condition number accepted for a mixing matrix (ICA is ill-posed near singular A).
MAX_CONDITION = 1e3
# Gauss–Legendre nodes per panel of the curve rules; most panels of one rule.
PANEL_ORDER = 8
MAX_PANELS = 16_384


def _vector(value: Sequence[float], name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim != 1 or t.numel() == 0 or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be a non-empty list of finite numbers, got {value}")
    return t


def composite_gauss_legendre(low: float, high: float, panels: int) -> tuple[Tensor, Tensor]:
    """Nodes and weights of `panels` equal Gauss–Legendre panels of 8 nodes on [low, high]."""
    k = torch.arange(1, PANEL_ORDER, dtype=torch.float64)
    off = k / (4 * k**2 - 1).sqrt()
    nodes, vecs = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    weights = 2 * vecs[0].square()
    width = (high - low) / panels
    left = low + width * torch.arange(panels, dtype=torch.float64)[:, None]
    return (left + 0.5 * width * (nodes + 1)).reshape(-1), (0.5 * width * weights).repeat(panels)


def curve_panels(points: Tensor, scale: float) -> int:
    """Panels for a curve sampled densely at `points` (n, d) in order: one per `scale` of arc."""
    length = float((points[1:] - points[:-1]).norm(dim=-1).sum())
    return int(min(max(math.ceil(length / scale), 16), MAX_PANELS))


class Curve(ToyData):
    """x = c(u) + width·ε, u ~ U(0, 1), ε ~ N(0, I): mass on a curve, thickened by `width`.

    With width > 0 the density ∫₀¹ N(x; c(u), width² I) du is a composite Gauss–Legendre sum
    with one 8-node panel per `width` of arc (as for the Swiss roll).
    """

    def __init__(self, width: float) -> None:
        if not (math.isfinite(width) and width >= 0):
            raise ValueError(f"width must be a finite std >= 0, got {width!r}")
        self.width = float(width)
        self.degenerate = self.width == 0.0
        self.has_density = not self.degenerate
        self._rule: tuple[Tensor, Tensor] | None = None

    @abstractmethod
    def curve(self, u: Tensor) -> Tensor:
        """c(u) for u ∈ [0, 1]: shape (..., dim), dtype of u."""

    def _dense(self) -> Tensor:
        return self.curve(torch.linspace(0.0, 1.0, 20_001, dtype=torch.float64))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        self._check_n(n)
        device = generator.device
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        x = self.curve(u)
        if self.width > 0:
            eps = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float64)
            x = x + self.width * eps
        return x.to(torch.float32)

    def log_prob(self, x: Tensor) -> Tensor:
        self._check_x(x)
        if self.degenerate:
            raise ValueError(
                "the data lie on a curve of zero width: no density exists (set a width > 0)"
            )
        centres, log_w = self._atoms()
        kernel = SpreadKernel("gaussian", self.width)
        out = atoms_log_prob(x, centres, log_w, kernel)
        return out.to(x.dtype if x.is_floating_point() else torch.float32)

    def log_prob_grid(self, axes: tuple[Tensor, ...], points: Tensor) -> Tensor:
        """The same sum as `log_prob`, pruned tile by tile on the grid (`atoms_log_prob_grid`)."""
        if self.degenerate:
            return self.log_prob(points)  # (refused)
        self._check_x(points)
        centres, log_w = self._atoms()
        kernel = SpreadKernel("gaussian", self.width)
        out = atoms_log_prob_grid(axes, points, centres, log_w, kernel)
        return out.to(points.dtype if points.is_floating_point() else torch.float32)

    def _atoms(self) -> tuple[Tensor, Tensor]:
        """The nodes c(u_j) of the rule along the curve and their log weights (built once)."""
        if self._rule is None:
            u, w = composite_gauss_legendre(0.0, 1.0, curve_panels(self._dense(), self.width))
            self._rule = (self.curve(u), w.log())
        return self._rule

    def bounds(self) -> Tensor:
        dense = self._dense()
        pad = 6.5 * self.width + 1e-6
        return torch.stack([dense.min(0).values - pad, dense.max(0).values + pad], dim=1)

    def length_scale(self) -> float:
        """The width, or for a zero-width curve 1% of its box's span (the figures' resolution)."""
        if self.width > 0:
            return self.width
        dense = self._dense()
        return 0.01 * float((dense.max(0).values - dense.min(0).values).max())

    @abstractmethod
    def thickened(self, width: float) -> Curve:
        """The same curve with another width."""


class Line(Curve):
    """Uniform on the segment from `start` to `end` (any dimension), thickened by `width`."""

    def __init__(self, start: Sequence[float], end: Sequence[float], width: float = 0.0) -> None:
        super().__init__(width)
        self.start, self.end = _vector(start, "start"), _vector(end, "end")
        if self.start.shape != self.end.shape:
            raise ValueError(f"start and end must have the same length, got {start} and {end}")
        if float((self.end - self.start).norm()) == 0:
            raise ValueError("start and end must differ (a segment of positive length)")
        self.dim = self.start.numel()

    def curve(self, u: Tensor) -> Tensor:
        start, end = self.start.to(u), self.end.to(u)
        return start + u[..., None] * (end - start)

    @property
    def direction(self) -> Tensor:
        """Unit vector from start to end."""
        d = self.end - self.start
        return d / d.norm()

    @property
    def length(self) -> float:
        return float((self.end - self.start).norm())

    def thickened(self, width: float) -> Line:
        return Line(self.start.tolist(), self.end.tolist(), width)


class Circle(Curve):
    """Uniform on the circle of `radius` about `center` (2-D), thickened by `width`."""

    def __init__(self, center: Sequence[float], radius: float, width: float = 0.0) -> None:
        super().__init__(width)
        self.center = _vector(center, "center")
        if self.center.numel() != 2:
            raise ValueError(f"center must be a 2-D point, got {center}")
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be positive, got {radius!r}")
        self.radius = float(radius)
        self.dim = 2

    def curve(self, u: Tensor) -> Tensor:
        angle = 2 * math.pi * u
        return self.center.to(u) + self.radius * torch.stack([angle.cos(), angle.sin()], -1)

    def thickened(self, width: float) -> Circle:
        return Circle(self.center.tolist(), self.radius, width)


def random_mixing(dim: int, seed: int) -> Tensor:
    """A seeded mixing matrix U diag(s) Vᵀ: U, V random orthogonal, s log-uniform in [1/2, 2]
    (condition number at most 4)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    log_s = torch.empty(dim, dtype=torch.float64).uniform_(-math.log(2), math.log(2), generator=g)
    return u @ torch.diag(log_s.exp()) @ v.T


class ICA(ToyData):
    """Noise-free ICA data x = A s, s_i independent unit-variance Laplace, A square (dim × dim).

    p(x) = Π_i Laplace((A⁻¹x)_i) / |det A| exactly.
    """

    def __init__(self, mixing: Tensor | Sequence[Sequence[float]]) -> None:
        a = torch.as_tensor(mixing, dtype=torch.float64)
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
            raise ValueError(f"mixing must be a square matrix, got shape {tuple(a.shape)}")
        if not torch.isfinite(a).all():
            raise ValueError("mixing must be finite")
        condition = float(torch.linalg.cond(a))
        if not condition < MAX_CONDITION:
            raise ValueError(
                f"mixing must be well conditioned (condition number < {MAX_CONDITION:g}), "
                f"got {condition:.3g}"
            )
        self.mixing = a
        self.dim = a.shape[0]
        self._unmixing = torch.linalg.inv(a)
        self._log_det = float(torch.linalg.slogdet(a)[1])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        self._check_n(n)
        s = laplace_sample((n, self.dim), LAPLACE_SCALE, generator)
        return (s @ self.mixing.to(s.device).T).to(torch.float32)

    def log_prob(self, x: Tensor) -> Tensor:
        self._check_x(x)
        s = x.to(torch.float64) @ self._unmixing.to(x.device).T
        log_p = (-s.abs() / LAPLACE_SCALE).sum(-1) - self.dim * math.log(2 * LAPLACE_SCALE)
        return (log_p - self._log_det).to(x.dtype if x.is_floating_point() else torch.float32)

    def bounds(self) -> Tensor:
        # |x_i| ≤ Σ_j |A_ij| max_j |s_j|; each |s_j| exceeds t with probability e^{−t/b}.
        t = LAPLACE_SCALE * math.log(self.dim / 1e-7)
        half = self.mixing.abs().sum(1) * t
        return torch.stack([-half, half], dim=1)

    def length_scale(self) -> float:
        return float(torch.linalg.svdvals(self.mixing).min()) * LAPLACE_SCALE


def amari_distance(estimate: Tensor, truth: Tensor) -> float:
    """Amari et al.'s (1996) distance between mixing matrices, normalised to [0, 1].

    With P = estimate⁻¹ truth: [Σ_i (Σ_j |p_ij| / max_k |p_ik| − 1) + Σ_j (Σ_i |p_ij| /
    max_k |p_kj| − 1)] / 2d(d − 1); 0 exactly when estimate = truth up to permutation and scale.
    """
    p = torch.linalg.solve(estimate.to(torch.float64), truth.to(torch.float64)).abs()
    d = p.shape[0]
    if d == 1:
        return 0.0
    rows = (p / p.max(1, keepdim=True).values).sum(1) - 1
    cols = (p / p.max(0, keepdim=True).values).sum(0) - 1
    return float((rows.sum() + cols.sum()) / (2 * d * (d - 1)))
