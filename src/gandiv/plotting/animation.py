"""Training animations: the model's samples moving over p, with the gradient field beside them.

Huszár's Swiss-roll animation ("An alternative update rule for generative adversarial networks"):
each frame shows a later Q_t through samples drawn from one fixed set of latent z, over p's
contours, and beside it the arrows along −∇_x loss at those samples. Axes extents, the density
axis (1-D) and the arrows' colour scale are fixed across frames so that motion is the only change.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.animation import FFMpegWriter
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from PIL import Image

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
    draw_ideal,
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

# Animation frames are rendered smaller than still figures: many frames, each encoded twice (GIF,
# MP4).
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
    ideals: Sequence[np.ndarray] = (),
) -> None:
    """Clear `ax_pair` and draw `frame`: on the left the samples over p (filled contours in
    2-D; a curve with the samples' histogram and rug in 1-D, where log_p is 1-D and ys is None)
    and the `ideals` dashed, on the right (if given) the gradient field with arrow colours on
    `norm`."""
    left, right = ax_pair
    one_d = np.ndim(log_p) == 1
    left.clear()
    if one_d:
        top = default_y_max(np.exp(log_p)) if y_max is None else y_max
        draw_curve(left, xs, np.exp(log_p), data=True)
        for log_ideal in ideals:
            draw_ideal(left, xs, None, log_ideal)
        draw_histogram(left, xs, frame.samples)
        draw_rug(left, frame.samples, (0.01, RUG_BAND - 0.01), MODEL_SAMPLE_COLOUR)
        density_axis(left, xs, top, RUG_BAND)
    else:
        assert ys is not None
        draw_data_filled(left, xs, ys, log_p)
        for log_ideal in ideals:
            draw_ideal(left, xs, ys, log_ideal)
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
    ideals: Sequence[np.ndarray] = (),
    ideal_label: str = "ideal fit",
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
        legend_handles(
            data="filled",
            model_samples=True,
            arrows=with_gradients,
            rug=one_d,
            ideal=ideal_label if len(ideals) else None,
        ),
    )
    prefix = f"{title_prefix}: " if title_prefix else ""

    def draw(i: int) -> None:
        animation_frame(ax_pair, frames[i], extent, xs, ys, log_p, norm, y_max, ideals)
        fig.suptitle(f"{prefix}step {frames[i].step}  (frame {i + 1}/{len(frames)})")

    draw(0)
    fig.canvas.draw()
    fig.set_layout_engine("none")  # freeze the layout of frame 0: panels must not jitter
    fig.set_dpi(ANIMATION_DPI)
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    width, height = canvas.get_width_height(physical=True)  # the renderer's size
    gif = Path(gif_path)
    written = [gif]
    pictures = []
    with ExitStack() as stack:
        mp4 = None
        if mp4_path is not None and FFMpegWriter.isAvailable():
            mp4 = stack.enter_context(_Mp4(Path(mp4_path), (width, height), fps))
            written.append(mp4.path)
        for i in range(len(frames)):
            draw(i)
            canvas.draw()  # each frame is rendered once, for the GIF and the MP4
            rgba = canvas.buffer_rgba()
            if mp4 is not None:
                mp4.write(rgba)
            pictures.append(_gif_picture(rgba, (width, height)))
    gif.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(
        gif, save_all=True, append_images=pictures[1:], duration=int(1000 / fps), loop=0
    )
    return written


def _gif_picture(rgba: memoryview, size: tuple[int, int]) -> Image.Image:
    """A GIF frame (a copy) of a rendered RGBA canvas, converted as matplotlib's `PillowWriter`
    does: opaque frames through RGB, which quantises better."""
    picture = Image.frombytes("RGBA", size, rgba)
    return picture.convert("RGB") if (np.asarray(rgba)[..., 3] == 255).all() else picture


class _Mp4:
    """An H.264 MP4 written by ffmpeg from raw RGBA frames on a pipe: the command line of
    matplotlib's `FFMpegWriter` with its default settings (``animation.codec`` h264, yuv420p for
    players' sake), fed with frames rendered once for the GIF and the MP4 alike."""

    def __init__(self, path: Path, size: tuple[int, int], fps: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # ffmpeg's output is read only at the end: -loglevel error keeps the pipe from filling
        command = [
            FFMpegWriter.bin_path(),
            *("-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{size[0]}x{size[1]}"),
            *("-pix_fmt", "rgba", "-framerate", str(fps), "-loglevel", "error", "-i", "pipe:"),
            *("-vcodec", "h264", "-pix_fmt", "yuv420p", "-y", str(path)),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def write(self, rgba: memoryview) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(rgba)

    def __enter__(self) -> _Mp4:
        return self

    def __exit__(self, *exc: object) -> None:
        out, err = self.process.communicate()
        code = self.process.returncode
        if code and exc[0] is None:
            raise subprocess.CalledProcessError(code, self.process.args, out, err)
