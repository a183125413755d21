"""Figures: functions take numpy arrays and return matplotlib figures; the caller saves them.

Every figure is a bare `matplotlib.figure.Figure` on an Agg canvas (no pyplot, no global state),
in one set of colours (`gandiv.plotting.style`): data p red, model q blue, model samples green,
real samples near-black, gradient arrows grey to black.
"""

from gandiv.plotting.animation import Frame, animation_frame, write_animation
from gandiv.plotting.critic import critic_curve_figure, critic_figure
from gandiv.plotting.curves import curves_figure, sweep_figure
from gandiv.plotting.density import Panel, density_curve_figure, density_figure, density_panels
from gandiv.plotting.gradients import gradient_curve_figure, gradient_field_figure
from gandiv.plotting.images import image_grid_figure

__all__ = [
    "Frame",
    "Panel",
    "animation_frame",
    "critic_curve_figure",
    "critic_figure",
    "curves_figure",
    "density_curve_figure",
    "density_figure",
    "density_panels",
    "gradient_curve_figure",
    "gradient_field_figure",
    "image_grid_figure",
    "sweep_figure",
    "write_animation",
]
