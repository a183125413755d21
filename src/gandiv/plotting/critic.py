"""Critic figures: what the discriminator believes, with the samples it is judging.

For the logistic critics of the GAN family the critic's logit V(x) estimates log p(x)/q(x)
(Huszár, "An alternative update rule for generative adversarial networks"); signed values are
shown on a diverging colour map centred at 0, red where the critic sees data (p > q) and blue
where it sees the model, with the V = 0 boundary drawn dashed.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import CenteredNorm, Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gandiv.plotting.style import (
    DIVERGING_CMAP,
    MODEL_SAMPLE_COLOUR,
    REAL_SAMPLE_COLOUR,
    SEQUENTIAL_CMAP,
    Extent,
    draw_rug,
    draw_samples,
    figure_legend,
    grid_extent,
    legend_handles,
    new_figure,
    points_1d,
    set_extent,
)

SYMLOG_ABOVE = 30.0  # a diverging colour range wider than ±30 goes logarithmic beyond ±1


def _is_diverging(values: np.ndarray, diverging: bool | None) -> bool:
    if diverging is not None:
        return diverging
    finite = values[np.isfinite(values)]
    return bool(finite.size and finite.min() < 0 < finite.max())


def critic_figure(
    xs: np.ndarray,
    ys: np.ndarray,
    values: np.ndarray,
    real: np.ndarray,
    fake: np.ndarray,
    title: str,
    label: str,
    *,
    diverging: bool | None = None,
    extent: Extent | None = None,
) -> Figure:
    """The critic's output `values` (shape (len(ys), len(xs))) as a heat map with a colour bar
    named `label`, real samples (n, 2) as dark dots and model samples (m, 2) as green dots.

    `diverging`: a diverging map centred at 0 (for a logit or a log density ratio); by default
    when the values take both signs. The colour range is the 99th percentile of |values| (or the
    1st to 99th percentiles), so that a critic that explodes far from the data does not wash out
    the region that matters; the colour bar's arrows mark clipped values. A diverging range wider
    than ±30 (an implied log ratio where p or q vanishes) is shown linear within ±1 and
    logarithmic beyond (`SymLogNorm`).
    """
    fig = new_figure(5.6, 5.0)
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    diverging = _is_diverging(values, diverging)
    if diverging:
        half = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
        half = half if half > 0 else 1.0
        norm: Normalize = (
            SymLogNorm(1.0, vmin=-half, vmax=half, base=10)
            if half > SYMLOG_ABOVE
            else CenteredNorm(0.0, half)
        )
        cmap = DIVERGING_CMAP
    else:
        low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        norm, cmap = Normalize(float(low), float(high)), SEQUENTIAL_CMAP
    mesh = ax.pcolormesh(xs, ys, values, cmap=cmap, norm=norm, shading="auto", rasterized=True)
    handles = legend_handles(data=None, real_samples=True, model_samples=True)
    if diverging and finite.size and finite.min() < 0 < finite.max():
        ax.contour(xs, ys, values, levels=[0.0], colors="0.1", linewidths=0.9, linestyles="--")
        handles.append(Line2D([], [], color="0.1", lw=0.9, ls="--", label="critic = 0"))
    draw_samples(ax, real, real=True)
    draw_samples(ax, fake)
    set_extent(ax, grid_extent(xs, ys) if extent is None else extent)
    ax.set_title(title)
    fig.colorbar(mesh, ax=ax, shrink=0.8, label=label, extend="both")
    figure_legend(fig, handles)
    return fig


def critic_curve_figure(
    x: np.ndarray,
    values: np.ndarray,
    real: np.ndarray,
    fake: np.ndarray,
    title: str,
    label: str,
) -> Figure:
    """A 1-D critic: `values` on the grid `x` as a curve (y axis named `label`, a line at 0 when
    it changes sign), real samples (n,) and model samples (m,) as rugs in a strip beneath it."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.plot(x, values, color="0.1", linewidth=1.8)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if low < 0 < high:
        ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle="--")
    _rug_strip(ax, low, high)
    draw_rug(ax, points_1d(fake), (0.01, 0.08), MODEL_SAMPLE_COLOUR)
    draw_rug(ax, points_1d(real), (0.10, 0.17), REAL_SAMPLE_COLOUR)
    ax.set_xlim(float(x[0]), float(x[-1]))
    ax.set_xlabel("$x$")
    ax.set_ylabel(label)
    ax.set_title(title)
    handles = [Line2D([], [], color="0.1", lw=1.8, label="critic")]
    handles += legend_handles(data=None, real_samples=True, model_samples=True, rug=True)
    figure_legend(fig, handles)
    return fig


def _rug_strip(ax: Axes, low: float, high: float) -> None:
    """y limits that keep the curve in the top 80 % of the axes, leaving the bottom for rugs."""
    span = high - low if high > low else 1.0
    ax.set_ylim(low - 0.25 * span, high + 0.05 * span)
