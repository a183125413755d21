"""Shared look of every figure: one colour per role, one way to draw p, q, samples and arrows.

Colours are fixed across figures so that a reader learns them once: the data density p is red
(filled contours or a filled curve), the model density q blue line contours, model samples green
dots, real samples near-black dots, gradient arrows dark grey to black. Figures are bare
`matplotlib.figure.Figure` objects on an Agg canvas: no pyplot, no global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.contour import QuadContourSet
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.quiver import Quiver
from matplotlib.ticker import MaxNLocator

Extent = tuple[float, float, float, float]  # (x_min, x_max, y_min, y_max)

DPI = 100
DATA_CMAP = "Reds"  # p: filled contours
DATA_COLOUR = "tab:red"  # p: line contours and curves
MODEL_COLOUR = "tab:blue"  # q: line contours and curves
MODEL_SAMPLE_COLOUR = "tab:green"
IDEAL_COLOUR = "0.1"  # the ideal fit: dashed near-black lines (contours in 2-D, a curve in 1-D)
REAL_SAMPLE_COLOUR = "0.1"
DIVERGING_CMAP = "RdBu_r"  # signed critic values: positive (p-like) red, negative (q-like) blue
SEQUENTIAL_CMAP = "viridis"
# Arrow colour = log magnitude, from mid grey (weak) to black (strong): always darker than p's reds.
ARROW_CMAP: Colormap = ListedColormap(colormaps["Greys"](np.linspace(0.45, 1.0, 256)), "arrows")
# Ground-truth and loss curves keep one colour per metric in every figure (red, blue and green
# are left to p, q and samples).
METRIC_LABELS = {
    "loss": "model loss",
    "critic_loss": "critic loss",
    "bound": "critic's divergence estimate",
    "kl_pq": "KL(P‖Q)",
    "kl_qp": "KL(Q‖P)",
    "js": "JS(P‖Q)",
    "objective_divergence": "objective's divergence",
    "spread_kl_pq": "KL(P̃‖Q̃)",
    "spread_kl_qp": "KL(Q̃‖P̃)",
    "spread_js": "JS(P̃‖Q̃)",
    "amari_distance": "Amari distance",
}
METRIC_COLOURS = {
    "loss": "0.1",
    "critic_loss": "tab:purple",
    "bound": "tab:brown",
    "kl_pq": "tab:orange",
    "kl_qp": "tab:cyan",
    "js": "tab:olive",
    "objective_divergence": "tab:pink",
}
Q_MASSES = (0.5, 0.9, 0.99)  # q's contours enclose these fractions of its mass


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of `width` × `height` inches at `DPI`, rendered by Agg."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def set_extent(ax: Axes, extent: Extent, xlabel: str = "$x_1$", ylabel: str = "$x_2$") -> None:
    """Fix a 2-D panel's limits (so that runs compare), equal aspect, and label its axes."""
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def grid_extent(xs: np.ndarray, ys: np.ndarray) -> Extent:
    return float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])


def points_2d(samples: np.ndarray) -> np.ndarray:
    points = np.asarray(samples, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"expected samples of shape (n, 2), got {points.shape}")
    return points


def points_1d(samples: np.ndarray) -> np.ndarray:
    points = np.asarray(samples, dtype=float)
    if points.ndim == 2 and points.shape[1] == 1:
        points = points[:, 0]
    if points.ndim != 1:
        raise ValueError(f"expected samples of shape (n,) or (n, 1), got {points.shape}")
    return points


def data_levels(log_p: np.ndarray, n: int = 10) -> np.ndarray:
    """About `n` round density levels from just above 0 to at least max p (the background stays
    white; the colour bar reads 0.2, 0.4, ... rather than 0.182, 0.363, ...)."""
    top = float(np.nanmax(np.exp(log_p)))
    if not top > 0:
        return np.array([1.0])
    levels = np.asarray(MaxNLocator(nbins=n).tick_values(0.0, top))
    return levels[levels > 0]


def mass_levels(log_q: np.ndarray, cell_area: float, masses: Sequence[float] = Q_MASSES):
    """Density thresholds whose super-level sets hold `masses` of q (highest-density regions).

    The mass is a Riemann sum on the grid of the normalised density exp(log_q); a fraction that
    the grid does not hold (q's mass has left the view) gets no contour.
    """
    density = np.exp(np.nan_to_num(log_q, nan=-np.inf)).ravel()
    ordered = np.sort(density)[::-1]
    cumulative = np.cumsum(ordered) * cell_area
    index = np.searchsorted(cumulative, np.asarray(masses, dtype=float))
    levels = ordered[index[index < len(ordered)]]
    return np.unique(levels[levels > 0])


def draw_data_filled(
    ax: Axes, xs: np.ndarray, ys: np.ndarray, log_p: np.ndarray, alpha: float = 0.85
) -> QuadContourSet:
    levels = data_levels(log_p)
    return ax.contourf(xs, ys, np.exp(log_p), levels=levels, cmap=DATA_CMAP, alpha=alpha)


def draw_model_lines(
    ax: Axes, xs: np.ndarray, ys: np.ndarray, log_q: np.ndarray
) -> QuadContourSet | None:
    cell_area = abs(float(np.mean(np.diff(xs))) * float(np.mean(np.diff(ys))))
    levels = mass_levels(log_q, cell_area)
    if len(levels) == 0:
        return None
    widths = np.linspace(0.9, 2.0, len(levels))  # the innermost (50 %) contour is the thickest
    return ax.contour(xs, ys, np.exp(log_q), levels=levels, colors=MODEL_COLOUR, linewidths=widths)


def draw_ideal(ax: Axes, xs: np.ndarray, ys: np.ndarray | None, log_ideal: np.ndarray) -> None:
    """The ideal fit as dashed lines: in 2-D the contours holding 50/90/99 % of its mass, in 1-D
    its density curve."""
    if ys is None:
        ax.plot(xs, np.exp(log_ideal), color=IDEAL_COLOUR, linewidth=1.4, linestyle="--")
        return
    cell_area = abs(float(np.mean(np.diff(xs))) * float(np.mean(np.diff(ys))))
    levels = mass_levels(log_ideal, cell_area)
    if len(levels):
        ax.contour(
            xs, ys, np.exp(log_ideal), levels=levels, colors=IDEAL_COLOUR, linewidths=1.1,
            linestyles="--",
        )  # fmt: skip


def draw_samples(ax: Axes, samples: np.ndarray, real: bool = False) -> Artist:
    colour = REAL_SAMPLE_COLOUR if real else MODEL_SAMPLE_COLOUR
    points = points_2d(samples)
    return ax.scatter(points[:, 0], points[:, 1], s=5, c=colour, alpha=0.7, linewidths=0)


def draw_rug(ax: Axes, values: np.ndarray, band: tuple[float, float], colour: str) -> Artist:
    """Ticks at `values` between heights `band` in axes coordinates (0 = the axes' bottom)."""
    return ax.vlines(
        points_1d(values), band[0], band[1], colors=colour, linewidths=0.8, alpha=0.6,
        transform=ax.get_xaxis_transform(),
    )  # fmt: skip


def draw_curve(ax: Axes, x: np.ndarray, density: np.ndarray, data: bool) -> None:
    if data:
        ax.fill_between(x, density, color=DATA_COLOUR, alpha=0.3, linewidth=0)
        ax.plot(x, density, color=DATA_COLOUR, linewidth=1.5)
    else:
        ax.plot(x, density, color=MODEL_COLOUR, linewidth=2.0)


def draw_histogram(ax: Axes, x: np.ndarray, samples: np.ndarray, bins: int = 40) -> None:
    """Samples as a density histogram outline over x's range, normalised by all samples (so it
    compares with q); an outline, so that p's fill shows through unmixed."""
    values = points_1d(samples)
    edges = np.linspace(float(x[0]), float(x[-1]), bins + 1)
    counts, _ = np.histogram(values, edges)
    heights = counts / (max(len(values), 1) * np.diff(edges))
    ax.stairs(heights, edges, color=MODEL_SAMPLE_COLOUR, linewidth=1.4)


def density_axis(ax: Axes, x: np.ndarray, y_max: float, band: float) -> None:
    """A 1-D density panel: x fixed to the grid, y from 0 to `y_max` over a strip `band` high
    (a fraction of the axes) kept below 0 for rugs; only the non-negative ticks are shown."""
    ax.set_xlim(float(x[0]), float(x[-1]))
    ax.set_ylim(-band / (1 - band) * y_max, y_max)
    ticks = np.asarray(MaxNLocator(nbins=5).tick_values(0.0, y_max))
    ax.set_yticks(ticks[(ticks >= 0) & (ticks <= y_max)])
    ax.axhline(0.0, color="0.6", linewidth=0.6)
    ax.set_xlabel("$x$")
    ax.set_ylabel("density")


def default_y_max(*densities: np.ndarray | None) -> float:
    """Room for p (the first) and for a model density up to three times p's peak."""
    p_max = float(np.nanmax(densities[0])) if densities[0] is not None else 1.0
    top = p_max
    for density in densities[1:]:
        if density is not None:
            top = max(top, min(float(np.nanmax(density)), 3 * p_max))
    return 1.1 * top if top > 0 else 1.0


def unit_arrows(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along `directions` (zero where the direction is zero or not finite) and
    log10 of each magnitude (NaN there)."""
    vectors = np.asarray(directions, dtype=float)
    if vectors.ndim == 1:
        vectors = vectors[:, None]
    magnitude = np.linalg.norm(vectors, axis=1)
    ok = np.isfinite(magnitude) & (magnitude > 0)
    unit = np.zeros_like(vectors)
    unit[ok] = vectors[ok] / magnitude[ok, None]
    log_magnitude = np.full(len(vectors), np.nan)
    log_magnitude[ok] = np.log10(magnitude[ok])
    return unit, log_magnitude


def magnitude_norm(log_magnitudes: Sequence[np.ndarray]) -> Normalize:
    """One colour scale for the arrows of every panel or frame."""
    finite = [m[np.isfinite(m)] for m in log_magnitudes]
    values = np.concatenate(finite) if finite else np.array([])
    if values.size == 0:
        return Normalize(-1.0, 1.0)
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    return Normalize(low, high)


def draw_arrows(
    ax: Axes,
    tails: np.ndarray,
    directions: np.ndarray,
    length: float,
    norm: Normalize,
) -> Quiver:
    """Arrows of a common `length` (data units) from `tails` along `directions`, coloured by
    log10 of each direction's magnitude on `norm`."""
    unit, log_magnitude = unit_arrows(directions)
    if unit.shape[1] == 1:  # 1-D: arrows along the x axis
        unit = np.concatenate([unit, np.zeros_like(unit)], axis=1)
    return ax.quiver(
        tails[:, 0], tails[:, 1], unit[:, 0] * length, unit[:, 1] * length, log_magnitude,
        cmap=ARROW_CMAP, norm=norm, angles="xy", scale_units="xy", scale=1.0,
        width=0.004, headwidth=4, headlength=4.5, headaxislength=4,
    )  # fmt: skip


def jitter_heights(n: int, band: tuple[float, float]) -> np.ndarray:
    """Fixed pseudo-random heights in `band` that spread n 1-D samples apart for arrows."""
    return np.random.default_rng(0).uniform(band[0], band[1], n)


def legend_handles(
    data: str | None = "filled",
    model: str | None = None,
    model_samples: bool = False,
    real_samples: bool = False,
    arrows: bool = False,
    rug: bool = False,
    ideal: str | None = None,
) -> list[Any]:
    """Legend entries in the shared colours. `data`: "filled" (filled contours or curve) or
    "lines" (line contours); `model`: "contours" (mass contours) or "curve"; `rug`: samples are
    drawn as rug ticks (and model samples also as a histogram outline) rather than dots;
    `ideal`: the label of the dashed ideal fit."""
    handles: list[Any] = []
    if data == "filled":
        handles.append(Patch(facecolor=DATA_COLOUR, alpha=0.6, label="data p"))
    elif data == "lines":
        handles.append(Line2D([], [], color=DATA_COLOUR, lw=1.0, label="data p"))
    if model == "contours":
        masses = "/".join(f"{m:.0%}".rstrip("%") for m in Q_MASSES)
        handles.append(
            Line2D([], [], color=MODEL_COLOUR, lw=1.5, label=f"model q ({masses}% mass)")
        )
    elif model == "curve":
        handles.append(Line2D([], [], color=MODEL_COLOUR, lw=2.0, label="model q"))
    if ideal is not None:
        handles.append(Line2D([], [], color=IDEAL_COLOUR, lw=1.2, linestyle="--", label=ideal))
    if real_samples:
        handles.append(_dot(REAL_SAMPLE_COLOUR, "real samples", rug))
    if model_samples:
        handles.append(_dot(MODEL_SAMPLE_COLOUR, "model samples", rug))
    if arrows:
        handles.append(
            Line2D([], [], color="0.15", marker=r"$\rightarrow$", ms=12, lw=0, label="−∇ₓ loss")
        )
    return handles


def _dot(colour: str, label: str, rug: bool = False) -> Line2D:
    if rug:
        return Line2D([], [], color=colour, marker="|", ms=10, mew=1.5, lw=0, label=label)
    return Line2D([], [], color=colour, marker="o", ms=5, lw=0, label=label)


def figure_legend(fig: Figure, handles: list[Any]) -> None:
    """One legend for the whole figure, below the panels, where it cannot cover data; as many
    columns as the figure's width holds (about 0.075 inch per character of a label at 10 pt)."""
    if not handles:
        return
    longest = max(len(str(h.get_label())) for h in handles)
    fits = int(fig.get_figwidth() / (0.075 * longest + 0.6))
    ncols = max(1, min(len(handles), fits))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False)
