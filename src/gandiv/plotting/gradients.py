"""Gradient fields: where the generator's loss pushes each model sample.

The right-hand panel of Huszár's Swiss-roll animation ("An alternative update rule for generative
adversarial networks"): at each model sample an arrow along −∇_x loss, over p's contours. Arrows
are normalised for readability: every arrow has the same length (a fixed fraction of the view),
so that directions can be read everywhere, and its colour, from grey to black, is log10 of the
gradient's magnitude on one colour bar.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.quiver import Quiver

from gandiv.plotting.style import (
    MODEL_SAMPLE_COLOUR,
    Extent,
    default_y_max,
    density_axis,
    draw_arrows,
    draw_curve,
    draw_data_filled,
    figure_legend,
    grid_extent,
    jitter_heights,
    legend_handles,
    magnitude_norm,
    new_figure,
    points_1d,
    points_2d,
    set_extent,
    unit_arrows,
)

ARROW_LENGTH = 0.05  # every arrow's length as a fraction of the view's shorter side (2-D)
ARROW_LENGTH_1D = 0.04  # ... of the x range (1-D)
SAMPLE_BAND = 0.45  # 1-D: the strip below the density (a fraction of the axes) holding samples
MAGNITUDE_LABEL = "log$_{10}$ ‖−∇$_x$ loss‖"


def draw_gradient_panel(
    ax: Axes,
    xs: np.ndarray,
    ys: np.ndarray,
    log_p: np.ndarray,
    samples: np.ndarray,
    directions: np.ndarray,
    extent: Extent,
    norm: Normalize,
) -> Quiver:
    """p's line contours, model samples, and one arrow per sample (see the module docstring)."""
    points = points_2d(samples)
    draw_data_filled(ax, xs, ys, log_p, alpha=0.45)
    ax.scatter(points[:, 0], points[:, 1], s=6, c=MODEL_SAMPLE_COLOUR, alpha=0.6, linewidths=0)
    length = ARROW_LENGTH * min(extent[1] - extent[0], extent[3] - extent[2])
    quiver = draw_arrows(ax, points, points_2d(directions), length, norm)
    set_extent(ax, extent)
    return quiver


def draw_gradient_curve_panel(
    ax: Axes,
    x: np.ndarray,
    log_p: np.ndarray,
    samples: np.ndarray,
    directions: np.ndarray,
    y_max: float,
    norm: Normalize,
) -> Quiver:
    """1-D: p as a curve; beneath it the model samples at fixed jittered heights (the height
    means nothing), each with a horizontal arrow along its −∇_x loss."""
    values = points_1d(samples)
    draw_curve(ax, x, np.exp(log_p), data=True)
    density_axis(ax, x, y_max, SAMPLE_BAND)
    bottom = ax.get_ylim()[0]
    heights = jitter_heights(len(values), (0.92 * bottom, 0.08 * bottom))
    ax.scatter(values, heights, s=6, c=MODEL_SAMPLE_COLOUR, alpha=0.7, linewidths=0)
    tails = np.stack([values, heights], axis=1)
    length = ARROW_LENGTH_1D * float(x[-1] - x[0])
    return draw_arrows(ax, tails, points_1d(directions)[:, None], length, norm)


def gradient_field_figure(
    xs: np.ndarray,
    ys: np.ndarray,
    log_p: np.ndarray,
    samples: np.ndarray,
    directions: np.ndarray,
    title: str,
    *,
    extent: Extent | None = None,
) -> Figure:
    """Arrows at model samples (n, 2) along `directions` (n, 2) = −∇_x of the generator's loss,
    over p's filled contours (log_p on the grid xs × ys). Each arrow has the same length, 5 % of the
    view's shorter side; its colour is log10 of the direction's magnitude (colour bar)."""
    fig = new_figure(5.6, 5.0)
    ax = fig.add_subplot()
    norm = magnitude_norm([unit_arrows(directions)[1]])
    quiver = draw_gradient_panel(
        ax, xs, ys, log_p, samples, directions, grid_extent(xs, ys) if extent is None else extent,
        norm,
    )  # fmt: skip
    ax.set_title(title)
    fig.colorbar(quiver, ax=ax, shrink=0.8, label=MAGNITUDE_LABEL)
    figure_legend(fig, legend_handles(model_samples=True, arrows=True))
    return fig


def gradient_curve_figure(
    x: np.ndarray,
    log_p: np.ndarray,
    samples: np.ndarray,
    directions: np.ndarray,
    title: str,
    *,
    y_max: float | None = None,
) -> Figure:
    """1-D gradient field: p on the grid `x`, model samples (n,) beneath it at jittered heights,
    each with an arrow along the x axis pointing along `directions` (n,) = −∇_x loss; arrows have
    one length (4 % of the x range) and colour = log10 magnitude (colour bar)."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    norm = magnitude_norm([unit_arrows(points_1d(directions))[1]])
    y_top = default_y_max(np.exp(log_p)) if y_max is None else y_max
    quiver = draw_gradient_curve_panel(ax, x, log_p, samples, directions, y_top, norm)
    ax.set_title(title)
    fig.colorbar(quiver, ax=ax, shrink=0.8, label=MAGNITUDE_LABEL)
    figure_legend(fig, legend_handles(model_samples=True, arrows=True))
    return fig
