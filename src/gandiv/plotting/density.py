"""Density figures: the data density p as filled contours with model contours and samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no GUI


@dataclass
class Panel:
    """One fit to draw: its title, the model density on the grid, and model samples."""

    title: str
    log_q: np.ndarray | None  # (ny, nx) on the figure's grid, or None for a model with no density
    samples: np.ndarray | None = None  # (n, 2)


def density_panels(
    xs: np.ndarray,
    ys: np.ndarray,
    log_p: np.ndarray,
    panels: Sequence[Panel],
    suptitle: str = "",
) -> Figure:
    """Side-by-side panels: p as filled contours (the same levels in each), q as line contours."""
    fig = Figure(figsize=(4.2 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    p = np.exp(log_p)
    levels = np.linspace(0, p.max(), 12)[1:]
    for ax, panel in zip(axes[0], panels, strict=True):
        filled = ax.contourf(xs, ys, p, levels=levels, cmap="Reds", alpha=0.85)
        if panel.log_q is not None:
            q = np.exp(panel.log_q)
            ax.contour(xs, ys, q, levels=np.linspace(0, q.max(), 7)[1:], colors="tab:blue")
        if panel.samples is not None:
            ax.scatter(*panel.samples.T, s=3, c="tab:green", alpha=0.5, label="model samples")
        ax.set_title(panel.title)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_aspect("equal")
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
    fig.colorbar(filled, ax=axes[0].tolist(), shrink=0.8, label="data density p(x)")
    if suptitle:
        fig.suptitle(suptitle)
    return fig
