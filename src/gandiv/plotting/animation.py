"""Training animations: the model's samples moving over p, with the gradient field beside them.

Huszár's Swiss-roll animation ("An alternative update rule for generative adversarial networks"):
each frame shows a later Q_t through samples drawn from one fixed set of latent z, over p's
contours, and beside it the arrows along −∇_x loss at those samples. Axes extents, the density
axis (1-D) and the arrows' colour scale are fixed across frames so that motion is the only change.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.animation import AbstractMovieWriter, FFMpegWriter, PillowWriter
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from gandiv.plotting.gradients import (
    MAGNITUDE_LABEL,
    draw_gradient_curve_panel,
    draw_gradient_panel,
)
from gandiv.plotting.style import (
    ARROW_CMAP,
    MODEL_SAMPLE_COLOUR,
    Extent,
    default_y_max,
    density_axis,
    draw_curve,
    draw_data_filled,
    draw_histogram,
    draw_rug,
    draw_samples,
    figure_legend,
    legend_handles,
    magnitude_norm,
    new_figure,
    points_1d,
    set_extent,
    unit_arrows,
)

# Animation frames are rendered smaller than still figures: many frames, encoded twice (GIF, MP4).
ANIMATION_DPI = 80
RUG_BAND = 0.1  # 1-D: the strip below the density that holds the samples' rug


@dataclass
class Frame:
    """One moment of training: model samples from the fixed latent z, and −∇_x loss at them."""

    step: int
    samples: np.ndarray  # (n, 2); (n,) or (n, 1) for 1-D data
    directions: np.ndarray | None = None  # −∇_x of the generator's loss, the samples' shape


def animation_frame(
    ax_pair: tuple[Axes, Axes | None],
    frame: Frame,
    extent: Extent,
    xs: np.ndarray,
    ys: np.ndarray | None,
    log_p: np.ndarray,
    norm: Normalize,
    y_max: float | None = None,
) -> None:
    """Clear `ax_pair` and draw `frame`: on the left the samples over p (filled contours in
    2-D; a curve with the samples' histogram and rug in 1-D, where log_p is 1-D and ys is None),
    on the right (if given) the gradient field with arrow colours on `norm`."""
    left, right = ax_pair
    one_d = np.ndim(log_p) == 1
    left.clear()
    if one_d:
        top = default_y_max(np.exp(log_p)) if y_max is None else y_max
        draw_curve(left, xs, np.exp(log_p), data=True)
        draw_histogram(left, xs, frame.samples)
        draw_rug(left, frame.samples, (0.01, RUG_BAND - 0.01), MODEL_SAMPLE_COLOUR)
        density_axis(left, xs, top, RUG_BAND)
    else:
        assert ys is not None
        draw_data_filled(left, xs, ys, log_p)
        draw_samples(left, frame.samples)
        set_extent(left, extent)
    left.set_title("model samples over p")
    if right is None:
        return
    right.clear()
    if frame.directions is None:
        right.text(0.5, 0.5, "no gradient", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
        return
    right.set_axis_on()
    if one_d:  # the samples are dots beneath p here: p alone sets the density axis
        top = default_y_max(np.exp(log_p))
        draw_gradient_curve_panel(right, xs, log_p, frame.samples, frame.directions, top, norm)
    else:
        assert ys is not None
        draw_gradient_panel(right, xs, ys, log_p, frame.samples, frame.directions, extent, norm)
    right.set_title("−∇$_x$ loss at the samples")


def _y_max_1d(x: np.ndarray, log_p: np.ndarray, frames: Sequence[Frame]) -> float:
    """A density axis that holds p and every frame's histogram (up to three times p's peak)."""
    edges = np.linspace(float(x[0]), float(x[-1]), 41)
    peaks = [
        np.histogram(points_1d(f.samples), edges)[0].max() / (len(f.samples) * np.diff(edges)[0])
        for f in frames
    ]
    return default_y_max(np.exp(log_p), np.array(peaks))


def write_animation(
    frames: Sequence[Frame],
    extent: Extent,
    xs: np.ndarray,
    ys: np.ndarray | None,
    log_p: np.ndarray,
    gif_path: str | Path,
    mp4_path: str | Path | None = None,
    title_prefix: str = "",
    fps: int = 8,
) -> list[Path]:
    """Write one GIF frame per `Frame` (and an MP4 when ffmpeg is available and `mp4_path` is
    given); return the paths written. 2-D: log_p on the grid xs × ys, `extent` fixes the view;
    1-D: log_p on xs, ys None, the view is xs's range. Each title names the step and the frame
    number, so that no two frames are identical: Pillow would merge identical neighbours into one
    GIF frame."""
    if not frames:
        raise ValueError("write_animation needs at least one frame")
    one_d = np.ndim(log_p) == 1
    with_gradients = any(f.directions is not None for f in frames)
    norm = magnitude_norm(
        [unit_arrows(f.directions)[1] for f in frames if f.directions is not None]
    )
    y_max = _y_max_1d(xs, log_p, frames) if one_d else None

    fig = new_figure(10.4 if with_gradients else 5.6, 4.6 if one_d else 5.2)
    axes = fig.subplots(1, 2 if with_gradients else 1, squeeze=False)[0]
    ax_pair = (axes[0], axes[1] if with_gradients else None)
    if with_gradients:
        mappable = ScalarMappable(norm=norm, cmap=ARROW_CMAP)
        fig.colorbar(mappable, ax=axes[1], shrink=0.8, label=MAGNITUDE_LABEL)
    figure_legend(
        fig,
        legend_handles(data="filled", model_samples=True, arrows=with_gradients, rug=one_d),
    )
    prefix = f"{title_prefix}: " if title_prefix else ""

    def draw(i: int) -> None:
        animation_frame(ax_pair, frames[i], extent, xs, ys, log_p, norm, y_max)
        fig.suptitle(f"{prefix}step {frames[i].step}  (frame {i + 1}/{len(frames)})")

    draw(0)
    fig.canvas.draw()
    fig.set_layout_engine("none")  # freeze the layout of frame 0: panels must not jitter
    gif = Path(gif_path)
    writers: list[tuple[AbstractMovieWriter, Path]] = [(PillowWriter(fps=fps), gif)]
    if mp4_path is not None and FFMpegWriter.isAvailable():
        writers.append((FFMpegWriter(fps=fps), Path(mp4_path)))
    with ExitStack() as stack:  # one pass over the frames feeds every writer
        for writer, path in writers:
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(writer.saving(fig, path, ANIMATION_DPI))
        for i in range(len(frames)):
            draw(i)
            for writer, _ in writers:
                writer.grab_frame()
    return [path for _, path in writers]
