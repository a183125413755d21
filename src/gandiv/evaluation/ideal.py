"""The ideal fit: the Gaussian that minimises a divergence from the data exactly, and its rivals.

For data P with a known density in 1-D or 2-D and the model class of full-covariance Gaussians
Q = N(μ, LLᵀ), the *ideal* for a divergence row f is the global minimiser of D_f(P‖Q) over (μ, L).
Gradient descent from one start finds the optimum of its own basin; reverse KL, JS_π at large π
and Neyman χ² have several (covering both modes, or sitting on one), and which one is global is the
very question gandiv asks. So the ideal is searched for properly:

* **Exact, smooth values.** D_f(P‖Q) = ∫ q f(p/q) is integrated with a partition of unity,
  1 = w_P + w_Q, w_P = p²/(p² + q²): the part w_P·q f(p/q) on a fixed midpoint grid over P's box
  (spacing half P's smallest length scale), the part w_Q·q f(p/q) on a grid in Q's own whitened
  coordinates x = μ + L u, u ∈ [−9, 9]^d, which moves with (μ, L). Each part is concentrated
  where its grid resolves it: where q ≫ p the P-part is ≤ (p/q)²·q f(p/q) (vanishing even for the
  χ² rows, whose integrands grow like p²/q and q²/p), and vice versa. Every integrand is a row's
  log-domain ``perspective``, so tails where one density underflows give their true limits, and
  the value is a smooth function of (μ, L) whatever their size: no box to widen while searching.
* **Many starts.** The moment-matched Gaussian (the forward-KL ideal), every node of an
  agglomerative tree over the mixture's components (each component, each merged pair, …, the
  whole; for data without components, weighted k-means clusters of the density on the grid),
  narrow copies of the components, a broad copy of the moment match, and any starts the caller
  adds (the model's own initialisation, the fit a run achieved).
* **Quasi-Newton refinement.** BFGS with a backtracking line search that rejects non-finite
  values (a χ² divergence is +inf where the model's tails outweigh the data's) on θ = (μ, log
  diag L, off-diagonal L), to a gradient of 1e-9. Every point it stops at is checked to be a
  minimum (finite-difference Hessian positive definite); from a saddle it restarts on both
  sides of the negative-curvature direction.
* **Every optimum recorded.** Distinct end points (2-Wasserstein distance above 1e-3 of the
  data's length scale) are the landscape's local optima, sorted by value; the first is the ideal.

The module is long (≈900 lines) and kept whole: the landscape's quadrature, the search over it
and the comparison of fits (`compare`, `nearest_divergence`) are one procedure, whose parts share
the Gaussian parameterisation (`GaussianFit`, θ) and the tolerances above; apart, none of them
reads without the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gandiv.data.toy import Mixture, ToyData
from gandiv.divergences import DIVERGENCES, FDivergence
from gandiv.evaluation.ground_truth import DataGrid, quadrature_box
from gandiv.evaluation.quadrature import make_grid

__all__ = [
    "GaussianFit",
    "IdealSearch",
    "Landscape",
    "Optimum",
    "gaussian_w2",
]

# The Q-grid: ±U_REACH standard units in Q's whitened coordinates (mass outside < 1e-18 per
# axis), U_POINTS cells per axis (a spacing of 0.28 standard units in 2-D: the midpoint rule's
# error on a unit Gaussian is ~exp(−2π²/0.28²), far below rounding).
U_REACH = 9.0
U_SPACING = 0.28
# ... and at most this many of the data's length scales in x (P's features inside a broad Q).
X_SPACING = 0.4
U_POINTS = {1: (256, 8192), 2: (64, 384)}
# The P-grid: a spacing of at most half the data's length scale (the midpoint rule's relative
# error on a Gaussian of that std is ~exp(−8π²) ≈ 1e-34), within these limits per axis.
P_POINTS = {1: (256, 8192), 2: (64, 512)}
# Optima closer than this (2-Wasserstein, in units of the data's length scale) are one optimum.
SAME_OPTIMUM = 1e-2
# BFGS: stop when the largest gradient entry is below GTOL (nats per unit of θ) or when a line
# search cannot decrease the value any further.
GTOL = 1e-9
# ... or when STALL iterations in a row changed the value by less than FTOL (relative; a smooth
# landscape has its optimum to ~1e-5 in θ by then): where the
# integrand has kinks (total variation's |p − q|) the quadrature's gradient never vanishes.
FTOL = 1e-11
STALL = 5
MAX_ITERATIONS = 400
# Finite-difference step of the Hessian check (in θ): SMOOTH_STEP where the descent ended on a
# vanishing gradient, ROUGH_STEP where it stalled on a landscape with kinks (total variation),
# whose gradient jumps at the grid's scale; and the smallest eigenvalue (relative to the
# largest) that still counts as positive curvature.
SMOOTH_STEP = 1e-4
ROUGH_STEP = 1e-2
FLAT = -1e-6
# A start whose value exceeds this is as good as infinite (a χ² whose tails overflow).
HOPELESS = 1e200
# Components used as separate leaves of the start tree (the heaviest; the rest are grouped).
MAX_LEAVES = 12
# A χ² value that grows by more than this (relative) when the domain doubles is divergent.
DIVERGENT = 1e-3
# Optima whose values differ by less than this (relative) tie for the global optimum.
TIE = 1e-6
# Optima of a landscape with kinks are polished on grids this many times finer per axis.
REFINE = 2


# ------------------------------------------------------------------------------------------------
# Gaussian parameters
@dataclass(frozen=True, eq=False)
class GaussianFit:
    """A Gaussian N(mean, cov) in float64."""

    mean: Tensor  # (d,)
    cov: Tensor  # (d, d)

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "cov": self.cov.tolist()}

    @classmethod
    def of(cls, mean: Any, cov: Any) -> GaussianFit:
        m = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        c = torch.as_tensor(cov, dtype=torch.float64).reshape(m.numel(), m.numel())
        return cls(m, 0.5 * (c + c.T))


def _theta(fit: GaussianFit) -> Tensor:
    """θ = (μ, log diag L, strictly lower L) of a Gaussian, L = chol(cov)."""
    chol = torch.linalg.cholesky(fit.cov)
    d = fit.dim
    rows, cols = torch.tril_indices(d, d, offset=-1)
    return torch.cat([fit.mean, torch.diagonal(chol).log(), chol[rows, cols]])


def _unpack(theta: Tensor, d: int) -> tuple[Tensor, Tensor]:
    """(μ, L) from θ; differentiable."""
    mean = theta[:d]
    log_diag = theta[d : 2 * d]
    rows, cols = torch.tril_indices(d, d, offset=-1)
    chol = torch.diag_embed(log_diag.exp())
    if d > 1:
        off = torch.zeros(d, d, dtype=theta.dtype).index_put((rows, cols), theta[2 * d :])
        chol = chol + off
    return mean, chol


def _fit(theta: Tensor, d: int) -> GaussianFit:
    mean, chol = _unpack(theta.detach(), d)
    return GaussianFit(mean.clone(), chol @ chol.T)


def _sqrtm(cov: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def gaussian_w2(a: GaussianFit, b: GaussianFit) -> float:
    """2-Wasserstein distance between two Gaussians (closed form):
    W₂² = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_b^{½} Σ_a Σ_b^{½})^{½})."""
    root_b = _sqrtm(b.cov)
    cross = _sqrtm(root_b @ a.cov @ root_b)
    squared = (a.mean - b.mean).square().sum() + torch.trace(a.cov + b.cov - 2 * cross)
    return float(squared.clamp(min=0).sqrt())


def parameter_difference(a: GaussianFit, b: GaussianFit) -> float:
    """The largest absolute difference of any mean entry or standard deviation
    (√ of a diagonal covariance entry) or correlation-scaled off-diagonal √|Σ_ij|."""
    sd_a, sd_b = torch.diagonal(a.cov).sqrt(), torch.diagonal(b.cov).sqrt()
    return float(
        torch.cat([(a.mean - b.mean).abs(), (sd_a - sd_b).abs()]).max()
        if a.dim == 1
        else torch.cat(
            [(a.mean - b.mean).abs(), (sd_a - sd_b).abs(), (a.cov - b.cov).abs().reshape(-1)]
        ).max()
    )


# ------------------------------------------------------------------------------------------------
# the landscape
class Landscape:
    """θ ↦ D_f(P‖N(μ, LLᵀ)) for data `data` (1-D or 2-D, known density), smooth in θ.

    The P-grid and log p on it are computed once. The Q-grid's points move with θ; its number of
    cells per axis (`u_points`) is chosen for the Gaussian at hand so that its spacing in x
    resolves the data's features (at most half the data's length scale) — a search keeps one size
    while it descends and refines it if the Gaussian it reaches needs a finer one.
    """

    def __init__(
        self,
        data: ToyData,
        grid_points: int | None = None,
        box_scale: float = 1.0,
        refine: int = 1,
    ) -> None:
        if not data.has_density or data.dim > 2:
            raise ValueError("the ideal is computed for data with a known density in 1-D or 2-D")
        self.data = data
        self.dim = d = data.dim
        self.length_scale = float(data.length_scale())
        low, high = quadrature_box(data)
        centre, half = (low + high) / 2, (high - low) / 2 * box_scale
        low, high = centre - half, centre + half
        if grid_points is None:
            fewest, most = P_POINTS[d]
            wanted = math.ceil(float((high - low).max()) / (0.5 * self.length_scale))
            grid_points = refine * min(max(wanted, fewest), most)
        self.refine = refine
        self._finer: Landscape | None = None
        held = DataGrid(data, low, high, grid_points)
        self.p_axis_points = grid_points
        self._doubled: dict[int, Landscape] = {}
        self.p_points = held.grid.points  # (N, d) float64
        self.p_log_p = held.log_p.to(torch.float64)
        self.p_cell = held.grid.cell_volume
        self.p_spacing = (held.grid.high - held.grid.low) / grid_points
        self._grad_log_p: Tensor | None = None
        self._u_grids: dict[tuple[int, float], tuple[Tensor, Tensor, float]] = {}
        # p's moments on its grid: the moment-matched Gaussian (the forward-KL ideal)
        weights = self.p_log_p.exp() * self.p_cell
        self.mass = float(weights.sum())
        weights = weights / weights.sum()
        mean = weights @ self.p_points
        centred = self.p_points - mean
        self.moments = GaussianFit(mean, (centred * weights[:, None]).T @ centred)

    # -- grids ----------------------------------------------------------------------------------
    def u_points(self, theta: Tensor) -> int:
        """Q-grid cells per axis for the Gaussian θ: a spacing of at most U_SPACING standard
        units and at most X_SPACING of the data's length scale in x, in steps of 32."""
        return self.u_points_for(_unpack(theta.detach(), self.dim)[1])

    def u_points_for(self, chol: Tensor) -> int:
        """`u_points` for the Gaussian with Cholesky factor `chol`."""
        chol = chol.detach().to(torch.float64)
        widest = float(torch.linalg.eigvalsh(chol @ chol.T)[-1].clamp(min=0).sqrt())
        spacing = min(U_SPACING, X_SPACING * self.length_scale / max(widest, 1e-300))
        fewest, most = U_POINTS[self.dim]
        wanted = 32 * math.ceil(2 * U_REACH / spacing / 32)
        return self.refine * min(max(wanted, fewest), most)

    def _u_grid(self, points: int, reach: float) -> tuple[Tensor, Tensor, float]:
        key = (points, reach)
        if key not in self._u_grids:
            grid = make_grid([-reach] * self.dim, [reach] * self.dim, points)
            u = grid.points
            log_n = -0.5 * u.square().sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
            self._u_grids[key] = (u, log_n, grid.cell_volume)
        return self._u_grids[key]

    # -- values ---------------------------------------------------------------------------------
    def value(
        self,
        row: FDivergence,
        theta: Tensor,
        u_points: int,
        reach: float = U_REACH,
        smooth: bool = True,
    ) -> Tensor:
        """D_f(P‖Q_θ) (float64 scalar, differentiable in θ); see `gaussian_value`."""
        mean, chol = _unpack(theta, self.dim)
        return self.gaussian_value(row, mean, chol, u_points, reach, smooth)

    def gaussian_value(
        self,
        row: FDivergence,
        mean: Tensor,
        chol: Tensor,
        u_points: int,
        reach: float = U_REACH,
        smooth: bool = True,
    ) -> Tensor:
        """D_f(P‖N(mean, chol cholᵀ)) by the partition-of-unity quadrature (float64 scalar,
        differentiable in mean and chol): w_P = p/(p + q) on P's grid, w_Q = q/(p + q) on Q's grid
        of `u_points` cells per axis over ±`reach` standard units.

        A kinked row (total variation) is integrated cell by cell (`_cell_mean_abs`: smooth in
        the parameters, for descents) unless `smooth` is false: then by the plain midpoint rule,
        whose errors where the kink crosses cells cancel on average (for values).
        """
        mean, chol = mean.to(torch.float64), chol.to(torch.float64)
        if row.kinked and self.dim == 1 and isinstance(self.data, Mixture):
            return self._total_variation_1d(mean, chol)
        kinked = row.kinked and smooth
        log_det = torch.diagonal(chol).log().sum()
        log_norm = -0.5 * self.dim * math.log(2 * math.pi) - log_det
        u, log_n, cell = self._u_grid(u_points, reach)
        with torch.enable_grad():  # (a kinked row needs ∇ₓ log p at the moving points)
            x = mean + u @ chol.T
            if kinked and not x.requires_grad:
                x = x.detach().requires_grad_(True)
            a_q = self.data.log_prob(x).to(torch.float64)
            grad_a_q = (
                torch.autograd.grad(a_q.sum(), x, create_graph=torch.is_grad_enabled())[0]
                if kinked
                else None
            )
        # the P-part on P's grid
        eps = torch.linalg.solve_triangular(chol, (self.p_points - mean).T, upper=False).T
        a, b = self.p_log_p, log_norm - 0.5 * eps.square().sum(-1)
        weight = torch.sigmoid(a - b)
        if kinked:  # ∇ₓ(p − q) = p ∇ log p + q L⁻ᵀ ε
            slope = a.exp()[:, None] * self._p_grad_log_p() + b.exp()[:, None] * (
                torch.linalg.solve_triangular(chol.T, eps.T, upper=True).T
            )
            part_p = _kinked_sum(a, b, slope * self.p_spacing, weight)
        else:
            part_p = _weighted_sum(row, a, b, weight)
        # the Q-part on Q's own grid x = μ + L u, dx = det L du
        b_q = log_n - log_det
        weight_q = torch.sigmoid(b_q - a_q)
        if grad_a_q is not None:  # ∂ᵤ(p − q) = p Lᵀ ∇ₓ log p + q u
            slope_q = a_q.exp()[:, None] * (grad_a_q @ chol) + b_q.exp()[:, None] * u
            du = 2 * reach / u_points
            part_q = _kinked_sum(a_q, b_q, slope_q * du, weight_q)
        else:
            part_q = _weighted_sum(row, a_q, b_q, weight_q)
        return part_p * self.p_cell + part_q * torch.exp(log_det) * cell

    def _total_variation_1d(self, mean: Tensor, chol: Tensor) -> Tensor:
        """½∫|p − q| for a 1-D mixture, exactly: p − q keeps its sign between its roots (found by
        bisection from the sign changes on both grids), so the integral is ½Σ|ΔF_P − ΔF_Q| over
        those intervals with the normal CDFs F. The roots move with the parameters but p = q
        there, so the value's derivative is that of the CDFs at fixed roots (Leibniz's rule)."""
        assert isinstance(self.data, Mixture)
        sigma = chol.reshape(())
        w, m = self.data.weights, self.data.means[:, 0]
        s = self.data.covs[:, 0, 0].sqrt()

        def diff(x: Tensor) -> Tensor:  # p − q, without gradients
            log_p = self.data.log_prob(x[:, None]).to(torch.float64)
            log_q = torch.distributions.Normal(mean.detach().reshape(()), sigma.detach())
            return log_p.exp() - log_q.log_prob(x).exp()

        with torch.no_grad():
            points = (
                torch.cat(
                    [
                        self.p_points[:, 0],
                        mean.detach() + sigma.detach() * self._u_grid(1024, U_REACH)[0][:, 0],
                    ]
                )
                .sort()
                .values
            )
            sign = diff(points).sign()
            brackets = torch.nonzero(sign[1:] * sign[:-1] < 0).reshape(-1)
            low, high = points[brackets], points[brackets + 1]
            for _ in range(45):
                mid = 0.5 * (low + high)
                left = diff(mid).sign() == sign[brackets]
                low, high = torch.where(left, mid, low), torch.where(left, high, mid)
            roots = 0.5 * (low + high)
        cdf_p = (w * torch.special.ndtr((roots[:, None] - m) / s)).sum(-1)
        cdf_q = torch.special.ndtr((roots - mean.reshape(())) / sigma)
        ends_p = torch.cat([cdf_p.new_zeros(1), cdf_p, cdf_p.new_ones(1)])
        ends_q = torch.cat([cdf_q.new_zeros(1), cdf_q, cdf_q.new_ones(1)])
        return 0.5 * ((ends_p[1:] - ends_p[:-1]) - (ends_q[1:] - ends_q[:-1])).abs().sum()

    def _p_grad_log_p(self) -> Tensor:
        """∇ₓ log p at P's grid points (computed once)."""
        if self._grad_log_p is None:
            with torch.enable_grad():
                points = self.p_points.clone().requires_grad_(True)
                log_p = self.data.log_prob(points).to(torch.float64)
                self._grad_log_p = torch.autograd.grad(log_p.sum(), points)[0].detach()
        return self._grad_log_p

    def fit_value(self, row: FDivergence, fit: GaussianFit) -> float:
        """D_f(P‖fit) as a float: +inf where it is infinite.

        The χ² rows (`power_tails`) can be infinite, or finite with tails that decay slowly near
        that boundary. For a mixture, finiteness is decided in closed form (`chi_square_finite`)
        and a finite value is recomputed over domains doubled in size (P's box and Q's reach)
        until it changes by less than 1e-7 (relative); for other data a value that still grows
        by more than DIVERGENT when the domain doubles is taken for a divergent integral.
        """
        theta = _theta(fit)
        exact = self.dim == 1 and isinstance(self.data, Mixture)
        if row.kinked and self.refine == 1 and not exact:  # the midpoint rule, finer grids
            return self.finer().fit_value(row, fit)
        points = self.u_points(theta)
        with torch.no_grad():
            value = float(self.value(row, theta, points, smooth=False))
            if not (row.power_tails and math.isfinite(value)):
                return value if math.isfinite(value) else math.inf
            finite = chi_square_finite(self.data, row, fit)
            if finite is False:
                return math.inf
            for k in range(1, 5 if finite else 2):
                wider = self.doubled(k)
                far = float(wider.value(row, theta, 2**k * points, 2**k * U_REACH))
                if not math.isfinite(far):
                    return math.inf
                change, value = far - value, far
                if finite is None and change > DIVERGENT * max(1.0, abs(value)):
                    return math.inf
                if abs(change) <= 1e-7 * max(1.0, abs(value)):
                    break
        return value

    def finer(self) -> Landscape:
        """The same landscape on grids REFINE times finer per axis (for polishing optima on a
        landscape with kinks, where the quadrature's jitter limits how closely BFGS can stop)."""
        if self._finer is None:
            self._finer = Landscape(self.data, REFINE * self.p_axis_points, refine=REFINE)
        return self._finer

    def doubled(self, k: int = 1) -> Landscape:
        """The same landscape over P's box doubled `k` times about its centre, at the same
        spacing up to the grid's limit."""
        if k not in self._doubled:
            most = P_POINTS[self.dim][1] * (4 if self.dim == 1 else 2)
            points = min(2**k * self.p_axis_points, most)
            self._doubled[k] = Landscape(self.data, points, box_scale=2.0**k)
        return self._doubled[k]


def _cell_mean_abs(d: Tensor, half: Tensor) -> Tensor:
    """The mean of |d + g·t| over a cell t ∈ [−h/2, h/2]^k for d linear across it: `d` (N,) its
    value at the centre, `half` (N, k) the half-changes c_j = |g_j| h_j / 2 along each axis (k ≤ 2).

    Exact for a linear d: with H(z) = |z|³/6 (so H'' = |z|), the mean is
    Σ_{±±} ±H(d ± c₁ ± c₂) / (4c₁c₂) in 2-D and (H'(d + c) − H'(d − c)) / 2c, H'(z) = z|z|/2, in
    1-D. It equals |d| in every cell the kink p = q does not cross, and unlike the midpoint value
    it moves smoothly as the kink crosses a cell.
    """
    c = half.sort(dim=-1, descending=True).values
    big = c[:, 0].clamp(min=1e-300)
    crossed = d.abs() < c.sum(-1)
    # a cell whose second half-change is negligible next to its first is treated as 1-D
    flat = c[:, -1] <= 1e-6 * big if c.shape[-1] > 1 else torch.ones_like(crossed)
    dd = torch.where(crossed, d, torch.zeros_like(d))  # (no cancellation where unused)

    def h1(z: Tensor) -> Tensor:
        return 0.5 * z * z.abs()

    one = (h1(dd + big) - h1(dd - big)) / (2 * big)
    if c.shape[-1] > 1:
        small = torch.where(flat, big, c[:, 1])

        def h2(z: Tensor) -> Tensor:
            return z.abs() ** 3 / 6.0

        corners = [h2(dd + big + small), h2(dd + big - small), h2(dd - big + small)]
        two = (corners[0] - corners[1] - corners[2] + h2(dd - big - small)) / (4 * big * small)
        inside = torch.where(flat, one, two)
    else:
        inside = one
    return torch.where(crossed, inside, d.abs())


def chi_square_finite(data: ToyData, row: FDivergence, fit: GaussianFit) -> bool | None:
    """Whether a χ² divergence from a Gaussian mixture P to the Gaussian `fit` is finite, by its
    tails (None: not a mixture, or not a χ² row). Pearson ∫p²/q sums the Gaussian integrals
    ∫N_i N_j / N_q, each finite iff Λ_i + Λ_j − Λ_q ≻ 0, i.e. iff 2Λ_k − Λ_q ≻ 0 for every
    component k. Neyman ∫q²/p: along each direction v, p's tail is that of the component decaying
    slowest, so it is finite iff max_k vᵀ(2Λ_q − Λ_k)v > 0 for every v (directions checked every
    0.25° in 2-D)."""
    if not isinstance(data, Mixture) or not row.power_tails:
        return None
    precisions = torch.linalg.inv(data.covs)
    own = torch.linalg.inv(fit.cov)
    if row is DIVERGENCES["pearson"]:
        return bool((torch.linalg.eigvalsh(2 * precisions - own)[:, 0] > 0).all())
    if data.dim == 1:
        directions = torch.ones(1, 1, dtype=torch.float64)
    else:
        angles = torch.arange(720, dtype=torch.float64) * math.pi / 720
        directions = torch.stack([angles.cos(), angles.sin()], 1)
    forms = torch.einsum("vi,kij,vj->vk", directions, 2 * own - precisions, directions)
    return bool((forms.max(dim=1).values > 0).all())


def _kinked_sum(a: Tensor, b: Tensor, change: Tensor, weight: Tensor) -> Tensor:
    """Σ weight · ½|p − q| with |p − q| averaged over each point's cell (p − q taken as linear
    across it; `change`: its change over the cell along each axis), see `_cell_mean_abs`."""
    d = a.exp() - b.exp()
    return 0.5 * (_cell_mean_abs(d, 0.5 * change.abs()) * weight).sum()


def _weighted_sum(row: FDivergence, a: Tensor, b: Tensor, weight: Tensor) -> Tensor:
    """Σ weight · q f(p/q) with log p = a, log q = b; a point of zero weight adds nothing (also when
    its integrand overflows)."""
    h = row.perspective(a, b)
    keep = weight > 0
    safe_h = torch.where(keep & torch.isfinite(h), h, torch.zeros_like(h))
    overflow = (keep & ~torch.isfinite(h)).any()
    total = (safe_h * weight).sum()
    return torch.where(overflow, total.new_tensor(math.inf), total)


# ------------------------------------------------------------------------------------------------
# the search
@dataclass(eq=False)
class Optimum:
    """A local minimum of D_f(P‖Q) over Gaussians, and the starts whose descent ended there."""

    fit: GaussianFit
    value: float
    starts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**self.fit.as_dict(), "value": self.value, "starts": list(self.starts)}


def _bfgs(
    fun: Callable[[Tensor], tuple[float, Tensor]], theta: Tensor
) -> tuple[Tensor, float, Tensor] | None:
    """Minimise `fun` (value, gradient) from `theta` by BFGS with a backtracking Armijo search
    that rejects non-finite values. None if the start itself is not finite."""
    f, g = fun(theta)
    if not math.isfinite(f) or not bool(torch.isfinite(g).all()):
        return None
    n = theta.numel()
    eye = torch.eye(n, dtype=torch.float64)
    inverse, scaled = eye, False
    stalled = 0  # iterations in a row that changed the value by less than rounding
    for _ in range(MAX_ITERATIONS):
        if float(g.abs().max()) < GTOL or stalled >= STALL:
            break
        direction = -inverse @ g
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            inverse, scaled = eye, False
            direction, slope = -g, -float(g @ g)
        # the first step moves θ by at most one unit
        step = 1.0 if scaled else min(1.0, 1.0 / float(direction.abs().max()))
        while True:
            candidate = theta + step * direction
            f_new, g_new = fun(candidate)
            if (
                math.isfinite(f_new)
                and f_new <= f + 1e-4 * step * slope
                and bool(torch.isfinite(g_new).all())
            ):
                break
            step *= 0.5
            if step * float(direction.abs().max()) < 1e-15:
                return theta, f, g  # no decrease left above rounding: converged
        s, y = candidate - theta, g_new - g
        sy = float(s @ y)
        if sy > 1e-14 * float(s.norm() * y.norm()):
            if not scaled:
                inverse, scaled = eye * sy / float(y @ y), True
            rho = 1.0 / sy
            left = eye - rho * torch.outer(s, y)
            inverse = left @ inverse @ left.T + rho * torch.outer(s, s)
        stalled = stalled + 1 if f - f_new <= FTOL * (1.0 + abs(f)) else 0
        theta, f, g = candidate, f_new, g_new
    return theta, f, g


def _hessian(fun: Callable[[Tensor], tuple[float, Tensor]], theta: Tensor, step: float) -> Tensor:
    """Central differences of the gradient, symmetrised (also right for total variation, whose
    integrand's kinks an autograd Hessian of the quadrature sum would miss)."""
    n = theta.numel()
    columns = []
    for j in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[j] = step
        columns.append((fun(theta + e)[1] - fun(theta - e)[1]) / (2 * step))
    hessian = torch.stack(columns, dim=1)
    return 0.5 * (hessian + hessian.T)


class IdealSearch:
    """The global optimum and the distinct local optima of D_f(P‖Q) over Gaussians Q.

    The search minimises log(1 + D_f − f(1)), a monotone transform of D_f (D_f ≥ f(1), its value
    at Q = P) that keeps the χ² rows' values, which span hundreds of orders of magnitude between
    starts, within a range a line search handles.
    """

    def __init__(self, landscape: Landscape, row: FDivergence) -> None:
        self.landscape = landscape
        self.row = row
        self.floor = float(row.f(torch.tensor(1.0, dtype=torch.float64)))
        self.optima: list[Optimum] = []
        self.starts: dict[str, GaussianFit] = {}  # every start tried, by name
        self.saddles = 0
        self.rough = False  # some descent stalled on kinks instead of a vanishing gradient

    def _objective(self, u_points: int) -> Callable[[Tensor], tuple[float, Tensor]]:
        def fun(theta: Tensor) -> tuple[float, Tensor]:
            t = theta.detach().clone().requires_grad_(True)
            value = torch.log1p(self.landscape.value(self.row, t, u_points) - self.floor)
            if not bool(torch.isfinite(value)):
                return math.inf, torch.full_like(t, math.nan)
            (grad,) = torch.autograd.grad(value, t)
            return float(value.detach()), grad

        return fun

    def _descend_theta(
        self, theta: Tensor
    ) -> tuple[Tensor, Tensor, Callable[[Tensor], tuple[float, Tensor]]] | None:
        """BFGS from θ, refining the Q-grid until the end point needs no finer one: the end
        point, its gradient and the objective on its grid."""
        points = self.landscape.u_points(theta)
        fun = self._objective(points)
        for _ in range(4):
            result = _bfgs(fun, theta)
            if result is None:
                return None
            theta, _, gradient = result
            needed = self.landscape.u_points(theta)
            if needed <= points:
                break
            points = needed
            fun = self._objective(points)
        return theta, gradient, fun

    def descend(self, name: str, start: GaussianFit, _depth: int = 0) -> Optimum | None:
        """BFGS from `start`; the minimum it reaches is recorded (merged with an equal one).
        None if D_f is infinite at the start, so that no descent can begin."""
        reached = self._descend_theta(_theta(start))
        if reached is None:
            return None
        theta, gradient, fun = reached
        rough = float(gradient.abs().max()) > 1e3 * GTOL
        self.rough |= rough
        step = ROUGH_STEP if rough else SMOOTH_STEP
        values, vectors = torch.linalg.eigh(_hessian(fun, theta, step))
        if not bool(torch.isfinite(values).all()):
            return None
        if float(values[0]) < FLAT * max(1.0, float(values[-1].abs())) and _depth < 2:
            # a saddle (e.g. the covering fit of a symmetric mixture under reverse KL): go down
            # both sides of its negative-curvature direction
            self.saddles += 1
            found = None
            for sign in (1.0, -1.0):
                nudged = theta + sign * 0.05 * vectors[:, 0]
                optimum = self.descend(f"{name}±", _fit(nudged, self.landscape.dim), _depth + 1)
                if optimum is not None and (found is None or optimum.value < found.value):
                    found = optimum
            return found
        fit = _fit(theta, self.landscape.dim)
        return self._record(name, fit, self.landscape.fit_value(self.row, fit))

    def _record(self, name: str, fit: GaussianFit, value: float) -> Optimum | None:
        if not math.isfinite(value):
            return None
        scale = self.landscape.length_scale
        for optimum in self.optima:
            if gaussian_w2(optimum.fit, fit) < SAME_OPTIMUM * scale:
                if value < optimum.value:
                    optimum.fit, optimum.value = fit, value
                optimum.starts.append(name)
                return optimum
        optimum = Optimum(fit, value, [name])
        self.optima.append(optimum)
        self.optima.sort(key=lambda o: o.value)
        return optimum

    def run(self, extra: Sequence[tuple[str, GaussianFit]] = ()) -> IdealSearch:
        if self.row is DIVERGENCES["kl"]:
            # KL(P‖Q) = −H(P) − E_p log q is convex in Q's natural parameters (Λ, Λμ): its one
            # optimum over Gaussians is the moment match, exactly (no search needed)
            moments = self.landscape.moments
            self.starts["moments"] = moments
            self._record("moments", moments, self.landscape.fit_value(self.row, moments))
            for name, start in extra:
                self.starts[name] = start
                self.optima[0].starts.append(name)
            return self
        for name, start in [*default_starts(self.landscape), *extra]:
            self.starts[name] = start
            self.descend(name, start)
        exact = self.landscape.dim == 1 and isinstance(self.landscape.data, Mixture)
        if ((self.row.kinked and not exact) or self.rough) and self.landscape.refine == 1:
            self._polish()
        if not self.optima:
            raise ValueError(
                f"no start gives a finite {self.row.name} divergence from the data: "
                "the ideal does not exist in the Gaussian class"
            )
        return self

    def _polish(self) -> None:
        """Descend again from every optimum on the finer landscape, and merge the results."""
        fine = IdealSearch(self.landscape.finer(), self.row)
        for optimum in self.optima:
            polished = fine.descend(optimum.starts[0], optimum.fit)
            if polished is not None:
                polished.starts.extend(optimum.starts[1:])
        self.optima = fine.optima
        self.saddles += fine.saddles

    def copy(self) -> IdealSearch:
        """A search with the same optima, to which further descents add without changing this."""
        other = IdealSearch(self.landscape, self.row)
        other.optima = [Optimum(o.fit, o.value, list(o.starts)) for o in self.optima]
        other.starts = dict(self.starts)
        other.saddles, other.rough = self.saddles, self.rough
        return other

    @property
    def ideal(self) -> Optimum:
        """The global optimum (the first of several tied ones: see `global_optima`)."""
        return self.optima[0]

    @property
    def global_optima(self) -> list[Optimum]:
        """The optima whose value ties the lowest (within TIE): mirror images of one fit on a
        symmetric mixture are equally ideal."""
        best = self.optima[0].value
        return [o for o in self.optima if o.value <= best + TIE * (1.0 + abs(best))]

    def global_start(self) -> str:
        """Of the starts whose descent reached a global optimum, the one where D_f is lowest
        (the nearest, in value, to the optimum: a gradient descent from it has least to do)."""
        reached = {name.rstrip("±") for o in self.global_optima for name in o.starts}
        candidates = [name for name in self.starts if name in reached]
        return min(
            candidates, key=lambda name: self.landscape.fit_value(self.row, self.starts[name])
        )


# ------------------------------------------------------------------------------------------------
# starts
def _components(landscape: Landscape) -> list[tuple[str, tuple[float, GaussianFit]]]:
    """Named (weight, Gaussian) leaves: the mixture's components by their index in the data (the
    heaviest MAX_LEAVES, each other one joined to its nearest leaf), or weighted k-means clusters
    of p on the grid."""
    data = landscape.data
    if not isinstance(data, Mixture):
        return [(f"cluster {i}", leaf) for i, leaf in enumerate(_kmeans(landscape, 8))]
    parts = [
        ([i], (float(w), GaussianFit(m.clone(), c.clone())))
        for i, (w, m, c) in enumerate(zip(data.weights, data.means, data.covs, strict=True))
    ]
    parts.sort(key=lambda part: -part[1][0])
    leaves, rest = parts[:MAX_LEAVES], parts[MAX_LEAVES:]
    for index, part in rest:
        k = min(range(len(leaves)), key=lambda i: gaussian_w2(leaves[i][1][1], part[1]))
        leaves[k] = (leaves[k][0] + index, _merge(leaves[k][1], part))
    leaves.sort(key=lambda leaf: leaf[0][0])
    return [
        (f"component{'s' if len(index) > 1 else ''} {'+'.join(map(str, index))}", leaf)
        for index, leaf in leaves
    ]


def _merge(a: tuple[float, GaussianFit], b: tuple[float, GaussianFit]) -> tuple[float, GaussianFit]:
    """The moment-matched Gaussian of two weighted Gaussians."""
    wa, fa = a
    wb, fb = b
    w = wa + wb
    mean = (wa * fa.mean + wb * fb.mean) / w
    da, db = fa.mean - mean, fb.mean - mean
    cov = (wa * (fa.cov + torch.outer(da, da)) + wb * (fb.cov + torch.outer(db, db))) / w
    return w, GaussianFit(mean, cov)


def _kmeans(landscape: Landscape, k: int) -> list[tuple[float, GaussianFit]]:
    """Weighted k-means (Lloyd, farthest-point initialisation: deterministic) of the grid points
    with weights p: each cluster's weight, mean and covariance."""
    points = landscape.p_points
    weights = landscape.p_log_p.exp()
    weights = weights / weights.sum()
    keep = weights > 1e-12
    points, weights = points[keep], weights[keep]
    centres = [points[int(weights.argmax())]]
    for _ in range(k - 1):
        distance = torch.cdist(points, torch.stack(centres)).min(dim=1).values
        centres.append(points[int((distance.square() * weights).argmax())])
    centre = torch.stack(centres)
    for _ in range(50):
        label = torch.cdist(points, centre).argmin(dim=1)
        new = torch.stack(
            [
                (weights[label == j, None] * points[label == j]).sum(0)
                / weights[label == j].sum().clamp(min=1e-300)
                if bool((label == j).any())
                else centre[j]
                for j in range(k)
            ]
        )
        if torch.allclose(new, centre):
            break
        centre = new
    label = torch.cdist(points, centre).argmin(dim=1)
    leaves = []
    floor = (0.5 * landscape.length_scale) ** 2 * torch.eye(landscape.dim, dtype=torch.float64)
    for j in range(k):
        mask = label == j
        w = weights[mask]
        if float(w.sum()) < 1e-6:
            continue
        x = points[mask] - centre[j]
        cov = (x * (w / w.sum())[:, None]).T @ x + floor
        leaves.append((float(w.sum()), GaussianFit(centre[j].clone(), cov)))
    return leaves


def default_starts(landscape: Landscape) -> list[tuple[str, GaussianFit]]:
    """The named starts of the search (see the module docstring)."""
    starts: list[tuple[str, GaussianFit]] = [("moments", landscape.moments)]
    broad = GaussianFit(landscape.moments.mean, 2.0 * landscape.moments.cov)
    starts.append(("broad", broad))
    # the agglomerative tree: repeatedly merge the two closest clusters (2-Wasserstein)
    clusters = _components(landscape)
    starts += [(name, leaf[1]) for name, leaf in clusters]
    starts += [(f"narrow {name}", GaussianFit(f.mean, f.cov / 4.0)) for name, (_, f) in clusters]
    while len(clusters) > 2:
        best = None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                distance = gaussian_w2(clusters[i][1][1], clusters[j][1][1])
                if best is None or distance < best[0]:
                    best = (distance, i, j)
        assert best is not None
        _, i, j = best
        merged = (f"{clusters[i][0]} + {clusters[j][0]}", _merge(clusters[i][1], clusters[j][1]))
        clusters = [c for k, c in enumerate(clusters) if k not in (i, j)] + [merged]
        starts.append((merged[0], merged[1][1]))
    return starts


# ------------------------------------------------------------------------------------------------
# a fit against its ideal
def compare(search: IdealSearch, achieved: GaussianFit) -> dict[str, Any]:
    """How a fit compares with the ideal of `search`'s divergence: the target's name; the ideal's
    value and parameters (of the global optimum nearest the fit, when several tie); the fit's own
    value (``achieved``, null when +inf, with ``achieved_infinite``) and its ``gap`` over the ideal
    in nats; its 2-Wasserstein ``distance`` to the ideal; the ``basin``: the local optimum a
    descent from the fit reaches; every local optimum with its distance from the fit; and the
    ideal fit's own ``ground_truth`` (kl_pq, kl_qp, js), to set beside the run's."""
    search = search.copy()
    if search.row is DIVERGENCES["kl"]:  # one optimum: every fit lies in its basin
        basin: Optimum | None = search.optima[0]
    else:
        basin = search.descend("achieved fit", achieved)
    value = search.landscape.fit_value(search.row, achieved)
    best = search.global_optima
    nearest_best = min(best, key=lambda o: gaussian_w2(achieved, o.fit))
    finite = math.isfinite(value)
    landscape = search.landscape
    return {
        "divergence": search.row.name,
        "value": nearest_best.value,
        "params": nearest_best.fit.as_dict(),
        # the ideal fit's own ground truth, beside the run's (kl_pq, kl_qp, js)
        "ground_truth": {
            key: landscape.fit_value(DIVERGENCES[name], nearest_best.fit)
            for key, name in (("kl_pq", "kl"), ("kl_qp", "reverse_kl"), ("js", "js"))
        },
        "achieved": value if finite else None,
        "achieved_infinite": not finite,
        "gap": value - nearest_best.value if finite else None,
        "distance": gaussian_w2(achieved, nearest_best.fit),
        "basin": next((i for i, o in enumerate(search.optima) if o is basin), None),
        "local_optima": [
            {**o.as_dict(), "distance": gaussian_w2(achieved, o.fit)} for o in search.optima
        ],
    }


def nearest_divergence(searches: dict[str, IdealSearch], achieved: GaussianFit) -> dict[str, Any]:
    """Which divergence's ideal is the fit nearest? For each search (by divergence name): the
    ideal's value, the fit's value and excess over it, and the fit's 2-Wasserstein distance to
    the ideal (the nearest of tied global optima). ``answer`` is the divergence at the smallest
    distance, ``ranking`` every divergence by distance, ``margin`` how much nearer the answer is
    than the runner-up, and ``indistinguishable`` the divergences whose ideals lie nearer the
    answer's ideal than the fit does (on these data, at this fit's precision, the fit cannot tell
    them from the answer)."""
    rows: dict[str, dict[str, Any]] = {}
    ideals: dict[str, GaussianFit] = {}
    distances: dict[str, float] = {}
    for name, search in searches.items():
        value = search.landscape.fit_value(search.row, achieved)
        best = min(search.global_optima, key=lambda o: gaussian_w2(achieved, o.fit))
        finite = math.isfinite(value)
        ideals[name] = best.fit
        distances[name] = gaussian_w2(achieved, best.fit)
        rows[name] = {
            "ideal": best.value,
            "achieved": value if finite else None,
            "excess": value - best.value if finite else None,
            "distance": distances[name],
            "ideal_params": best.fit.as_dict(),
        }
    ranking = sorted(rows, key=lambda name: distances[name])
    if not ranking:
        return {"answer": None, "margin": None, "ranking": [], "divergences": rows}
    answer = ranking[0]
    margin = distances[ranking[1]] - distances[answer] if len(ranking) > 1 else None
    alike = [
        name
        for name in ranking[1:]
        if gaussian_w2(ideals[name], ideals[answer]) <= max(distances[answer], 1e-9)
    ]
    return {
        "answer": answer,
        "margin": margin,
        "indistinguishable": alike,
        "ranking": ranking,
        "divergences": rows,
    }
