"""Density figures: the data density p with the model density q and model samples over it.

p is drawn as red filled contours (2-D) or a filled red curve (1-D); q as blue line contours that
enclose 50 %, 90 % and 99 % of its mass (2-D) or a blue curve (1-D); model samples as green dots,
or in 1-D as a green histogram with a rug beneath the axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from gandiv.plotting.style import (
    MODEL_SAMPLE_COLOUR,
    Extent,
    default_y_max,
    density_axis,
    draw_curve,
    draw_data_filled,
    draw_histogram,
    draw_ideal,
    draw_model_lines,
    draw_rug,
    draw_samples,
    figure_legend,
    legend_handles,
    new_figure,
    set_extent,
)

RUG_BAND = 0.1  # the strip below y = 0 (a fraction of the axes' height) that holds the rug


@dataclass
class Panel:
    """One fit to draw: its title, the model density on the figure's grid, and model samples."""

    title: str
    log_q: np.ndarray | None  # (ny, nx) on the figure's grid, or None for a model with no density
    samples: np.ndarray | None = None  # (n, 2)
    ideals: Sequence[np.ndarray] = ()  # log densities of the ideal fit(s), drawn dashed


def density_panels(
    xs: np.ndarray,
    ys: np.ndarray,
    log_p: np.ndarray,
    panels: Sequence[Panel],
    suptitle: str = "",
) -> Figure:
    """Side-by-side fits over the same p: p filled (the same levels in each), q as line contours."""
    fig = new_figure(4.2 * len(panels), 4.6)
    axes = fig.subplots(1, len(panels), squeeze=False)
    extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
    filled = None
    for ax, panel in zip(axes[0], panels, strict=True):
        filled = draw_data_filled(ax, xs, ys, log_p)
        for log_ideal in panel.ideals:
            draw_ideal(ax, xs, ys, log_ideal)
        if panel.log_q is not None:
            draw_model_lines(ax, xs, ys, panel.log_q)
        if panel.samples is not None:
            draw_samples(ax, panel.samples)
        ax.set_title(panel.title)
        set_extent(ax, extent)
    assert filled is not None
    fig.colorbar(filled, ax=axes[0].tolist(), shrink=0.8, label="data density p(x)")
    figure_legend(
        fig,
        legend_handles(
            model="contours" if any(p.log_q is not None for p in panels) else None,
            model_samples=any(p.samples is not None for p in panels),
            ideal="ideal fit of the target" if any(len(p.ideals) for p in panels) else None,
        ),
    )
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def density_figure(
    extent: Extent,
    xs: np.ndarray,
    ys: np.ndarray,
    log_p: np.ndarray,
    log_q: np.ndarray | None = None,
    samples: np.ndarray | None = None,
    title: str = "",
    ideals: Sequence[np.ndarray] = (),
    ideal_label: str = "ideal fit",
) -> Figure:
    """One 2-D fit: p (log density, shape (len(ys), len(xs))) as filled contours with a colour
    bar, q (normalised log density on the same grid) as contours holding 50/90/99 % of its mass,
    the `ideals` (log densities of the ideal fit and of any tied with it) as dashed contours, and
    model samples (n, 2) as green dots, inside the fixed `extent` (x_min, x_max, y_min, y_max).
    """
    fig = new_figure(5.6, 5.0)
    ax = fig.add_subplot()
    filled = draw_data_filled(ax, xs, ys, log_p)
    for log_ideal in ideals:
        draw_ideal(ax, xs, ys, log_ideal)
    if log_q is not None:
        draw_model_lines(ax, xs, ys, log_q)
    if samples is not None:
        draw_samples(ax, samples)
    set_extent(ax, extent)
    ax.set_title(title)
    fig.colorbar(filled, ax=ax, shrink=0.8, label="data density p(x)")
    figure_legend(
        fig,
        legend_handles(
            model=None if log_q is None else "contours",
            model_samples=samples is not None,
            ideal=ideal_label if len(ideals) else None,
        ),
    )
    return fig


def density_curve_figure(
    x: np.ndarray,
    log_p: np.ndarray,
    log_q: np.ndarray | None = None,
    samples: np.ndarray | None = None,
    title: str = "",
    *,
    y_max: float | None = None,
    ideals: Sequence[np.ndarray] = (),
    ideal_label: str = "ideal fit",
) -> Figure:
    """One 1-D fit on the grid `x` (its ends fix the x limits): p as a filled red curve, q as a
    blue curve, the `ideals` as dashed curves, model samples (n,) as a green density histogram and
    a rug below the axis.

    `y_max` fixes the density axis (pass the same value to compare runs); by default it leaves
    room for p and for q up to three times p's peak.
    """
    p = np.exp(log_p)
    q = None if log_q is None else np.exp(log_q)
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    draw_curve(ax, x, p, data=True)
    for log_ideal in ideals:
        draw_ideal(ax, x, None, log_ideal)
    if q is not None:
        draw_curve(ax, x, q, data=False)
    if samples is not None:
        draw_histogram(ax, x, samples)
        draw_rug(ax, samples, (0.01, RUG_BAND - 0.01), MODEL_SAMPLE_COLOUR)
    density_axis(ax, x, default_y_max(p, q) if y_max is None else y_max, RUG_BAND)
    ax.set_title(title)
    handles = legend_handles(
        model=None if q is None else "curve",
        model_samples=samples is not None,
        rug=True,
        ideal=ideal_label if len(ideals) else None,
    )
    figure_legend(fig, handles)
    return fig
