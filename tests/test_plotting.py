"""Figures are drawn from arrays and carry visible content."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import numpy as np

from gandiv.plotting.density import Panel, density_panels


def test_density_panels_draws_every_panel(tmp_path):
    xs, ys = np.linspace(-3, 3, 60), np.linspace(-2, 2, 40)
    gx, gy = np.meshgrid(xs, ys)
    log_p = -0.5 * (gx**2 + gy**2)
    log_q = -0.5 * ((gx - 1) ** 2 + gy**2)
    samples = np.random.default_rng(0).normal(size=(100, 2))
    fig = density_panels(
        xs, ys, log_p, [Panel("a", log_q), Panel("b", None, samples)], suptitle="title"
    )
    assert len(fig.axes) == 3  # two panels and the colour bar
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "b"]
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    image = mpimg.imread(io.BytesIO(buffer.getvalue()))
    assert image.ndim == 3 and image[..., :3].std() > 0.05  # not blank
