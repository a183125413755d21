"""Figures are drawn from arrays, render to the promised size with visible content, carry their
titles, labels, legends and colour bars, and show the numbers they were given."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.animation import FFMpegWriter
from matplotlib.collections import LineCollection
from matplotlib.colors import SymLogNorm, to_rgba
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from matplotlib.quiver import Quiver
from PIL import Image

from gandiv.plotting import (
    Frame,
    Panel,
    animation_frame,
    critic_curve_figure,
    critic_figure,
    curves_figure,
    density_curve_figure,
    density_figure,
    density_panels,
    gradient_curve_figure,
    gradient_field_figure,
    image_grid_figure,
    sweep_figure,
    write_animation,
)
from gandiv.plotting.animation import ANIMATION_DPI
from gandiv.plotting.images import PAD, image_grid
from gandiv.plotting.style import magnitude_norm, mass_levels, new_figure

EXTENT = (-3.0, 3.0, -2.0, 2.0)
XS, YS = np.linspace(-3, 3, 61), np.linspace(-2, 2, 41)
GX, GY = np.meshgrid(XS, YS)
LOG_P = -0.5 * (GX**2 + GY**2) / 0.5**2 - np.log(2 * np.pi * 0.5**2)
LOG_Q = -0.5 * ((GX - 1) ** 2 + GY**2) - np.log(2 * np.pi)
RNG = np.random.default_rng(0)
SAMPLES = RNG.normal(size=(200, 2)) + np.array([1.0, 0.0])
REAL = RNG.normal(size=(200, 2)) * 0.5
X1 = np.linspace(-4, 4, 201)
LOG_P1 = -0.5 * X1**2 - 0.5 * np.log(2 * np.pi)
LOG_Q1 = -0.5 * (X1 - 1) ** 2 / 4 - 0.5 * np.log(8 * np.pi)
SAMPLES1 = RNG.normal(size=300) * 2 + 1


def rendered(fig: Figure) -> np.ndarray:
    """The figure as a PNG read back; checks that it has the figure's size and is not blank."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    image = mpimg.imread(io.BytesIO(buffer.getvalue()))
    width, height = fig.get_size_inches() * fig.dpi
    assert fig.dpi == 100
    assert image.shape[:2] == (round(height), round(width))
    assert image[..., :3].std() > 0.05  # not blank
    return image


def legend_labels(fig: Figure) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def colorbar_labels(fig: Figure) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def plot_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def quiver_of(ax) -> Quiver:
    (quiver,) = [c for c in ax.collections if isinstance(c, Quiver)]
    return quiver


def test_density_panels_draws_every_panel():
    fig = density_panels(
        XS, YS, LOG_P, [Panel("a", LOG_Q), Panel("b", None, SAMPLES)], suptitle="title"
    )
    assert len(fig.axes) == 3  # two panels and the colour bar
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "b"]
    assert fig.get_suptitle() == "title"
    assert colorbar_labels(fig) == ["data density p(x)"]
    assert legend_labels(fig) == ["data p", "model q (50/90/99% mass)", "model samples"]
    rendered(fig)


def test_density_figure_has_title_labels_extent_and_legend():
    fig = density_figure(EXTENT, XS, YS, LOG_P, LOG_Q, SAMPLES, "forward_kl on mixture, step 10")
    (ax,) = plot_axes(fig)
    assert ax.get_title() == "forward_kl on mixture, step 10"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("$x_1$", "$x_2$")
    assert ax.get_xlim() == EXTENT[:2] and ax.get_ylim() == EXTENT[2:]
    assert colorbar_labels(fig) == ["data density p(x)"]
    assert legend_labels(fig) == ["data p", "model q (50/90/99% mass)", "model samples"]
    (q_lines,) = [c for c in ax.collections if isinstance(c, ContourSet) and not c.filled]
    assert len(q_lines.levels) == 2  # 50 % and 90 % of q's mass; its 99 % region leaves the view
    np.testing.assert_allclose(q_lines.get_edgecolor()[0], to_rgba("tab:blue"))
    scatter = [c for c in ax.collections if c.get_offsets().shape == SAMPLES.shape]
    np.testing.assert_allclose(scatter[0].get_offsets(), SAMPLES)
    rendered(fig)


def test_density_figure_without_model_has_only_p_in_its_legend():
    fig = density_figure(EXTENT, XS, YS, LOG_P, title="data only")
    assert legend_labels(fig) == ["data p"]
    rendered(fig)


def test_model_contours_enclose_the_stated_mass():
    # A standard 2-D Gaussian: the region {q > t} holding mass m has radius² = −2 log(1 − m),
    # so t = (1 − m) / (2π).
    xs = np.linspace(-8, 8, 801)
    gx, gy = np.meshgrid(xs, xs)
    log_q = -0.5 * (gx**2 + gy**2) - np.log(2 * np.pi)
    levels = mass_levels(log_q, (xs[1] - xs[0]) ** 2, (0.5, 0.9, 0.99))
    np.testing.assert_allclose(levels, np.array([0.01, 0.1, 0.5]) / (2 * np.pi), rtol=0.02)
    # mass that has left the grid gets no contour
    shifted = -0.5 * ((gx - 7.5) ** 2 + gy**2) - np.log(2 * np.pi)
    assert len(mass_levels(shifted, (xs[1] - xs[0]) ** 2, (0.5, 0.9))) == 1


def test_density_curve_figure_draws_p_q_and_a_normalised_histogram():
    fig = density_curve_figure(X1, LOG_P1, LOG_Q1, SAMPLES1, "forward_kl 1-D, step 5", y_max=0.6)
    (ax,) = plot_axes(fig)
    assert ax.get_title() == "forward_kl 1-D, step 5"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("$x$", "density")
    assert ax.get_xlim() == (-4.0, 4.0) and ax.get_ylim()[1] == 0.6
    assert legend_labels(fig) == ["data p", "model q", "model samples"]
    curves = {line.get_color(): line.get_ydata() for line in ax.lines}
    np.testing.assert_allclose(curves["tab:blue"], np.exp(LOG_Q1))
    np.testing.assert_allclose(curves["tab:red"], np.exp(LOG_P1))
    (stairs,) = ax.patches
    heights, edges = stairs.get_data().values, stairs.get_data().edges
    inside = np.mean((SAMPLES1 >= -4) & (SAMPLES1 <= 4))
    assert np.sum(heights * np.diff(edges)) == pytest.approx(inside)
    rugs = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(rugs[-1].get_segments()) == len(SAMPLES1)
    rendered(fig)


def test_critic_figure_centres_a_diverging_map_at_zero():
    values = LOG_P - LOG_Q
    fig = critic_figure(XS, YS, values, REAL, SAMPLES, "gan critic, step 3", "critic V(x)")
    (ax,) = plot_axes(fig)
    assert ax.get_title() == "gan critic, step 3"
    assert ax.get_xlabel() == "$x_1$"
    assert colorbar_labels(fig) == ["critic V(x)"]
    assert legend_labels(fig) == ["real samples", "model samples", "critic = 0"]
    mesh = ax.collections[0]
    assert mesh.get_cmap().name == "RdBu_r"
    assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
    rendered(fig)


def test_critic_figure_uses_a_sequential_map_for_one_signed_values_unless_told():
    values = np.exp(LOG_P)  # a probability-like output: no sign change
    fig = critic_figure(XS, YS, values, REAL, SAMPLES, "t", "D(x)")
    mesh = plot_axes(fig)[0].collections[0]
    assert mesh.get_cmap().name == "viridis"
    assert "critic = 0" not in legend_labels(fig)
    forced = critic_figure(XS, YS, values, REAL, SAMPLES, "t", "log ratio", diverging=True)
    mesh = plot_axes(forced)[0].collections[0]
    assert mesh.get_cmap().name == "RdBu_r" and mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
    rendered(fig)


def test_critic_figure_goes_logarithmic_for_an_exploding_log_ratio():
    values = 200 * (LOG_P - LOG_Q)
    fig = critic_figure(XS, YS, values, REAL, SAMPLES, "t", "log p/q")
    assert isinstance(plot_axes(fig)[0].collections[0].norm, SymLogNorm)
    rendered(fig)


def test_critic_curve_figure():
    values = LOG_P1 - LOG_Q1
    fig = critic_curve_figure(X1, values, REAL[:, 0], SAMPLES1, "gan critic 1-D", "V(x)")
    (ax,) = plot_axes(fig)
    assert ax.get_title() == "gan critic 1-D"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("$x$", "V(x)")
    assert legend_labels(fig) == ["critic", "real samples", "model samples"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), values)
    low, high = ax.get_ylim()
    assert low < values.min() and high > values.max()
    rendered(fig)


def test_gradient_field_arrows_point_along_the_given_directions():
    samples = RNG.normal(size=(50, 2))
    directions = RNG.normal(size=(50, 2)) * np.exp(RNG.normal(size=(50, 1)) * 2)
    directions[7] = 0.0  # no push: no arrow
    fig = gradient_field_figure(XS, YS, LOG_P, samples, directions, "logit_gan, step 9")
    (ax,) = plot_axes(fig)
    assert ax.get_title() == "logit_gan, step 9"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("$x_1$", "$x_2$")
    quiver = quiver_of(ax)
    np.testing.assert_allclose(quiver.get_offsets(), samples)
    arrows = np.stack([quiver.U, quiver.V], axis=1)
    lengths = np.linalg.norm(arrows, axis=1)
    moving = np.ones(50, bool)
    moving[7] = False
    assert lengths[7] == 0
    np.testing.assert_allclose(lengths[moving], 0.05 * 4.0)  # one length: 5 % of the shorter side
    unit = directions[moving] / np.linalg.norm(directions[moving], axis=1, keepdims=True)
    np.testing.assert_allclose(arrows[moving] / lengths[moving, None], unit, atol=1e-12)
    colours = np.ma.filled(quiver.get_array(), np.nan)
    np.testing.assert_allclose(
        colours[moving], np.log10(np.linalg.norm(directions[moving], axis=1))
    )
    assert colorbar_labels(fig) == ["log$_{10}$ ‖−∇$_x$ loss‖"]
    assert legend_labels(fig) == ["data p", "model samples", "−∇ₓ loss"]
    rendered(fig)


def test_gradient_curve_arrows_lie_along_the_axis():
    directions = np.tanh(1.0 - SAMPLES1) * np.exp(-np.abs(SAMPLES1))
    fig = gradient_curve_figure(X1, LOG_P1, SAMPLES1, directions, "logit_gan 1-D")
    (ax,) = plot_axes(fig)
    assert ax.get_title() == "logit_gan 1-D"
    assert ax.get_xlabel() == "$x$"
    quiver = quiver_of(ax)
    np.testing.assert_allclose(quiver.get_offsets()[:, 0], SAMPLES1)
    assert np.all(quiver.get_offsets()[:, 1] < 0)  # beneath the density
    np.testing.assert_array_equal(quiver.V, 0.0)
    np.testing.assert_array_equal(np.sign(quiver.U), np.sign(directions))
    assert len(colorbar_labels(fig)) == 1
    rendered(fig)


def records() -> list[dict]:
    out: list[dict] = []
    for step in range(0, 1001, 50):
        record = {"step": step, "loss": 1.0 / (1 + step), "bound": 0.5, "time_s": 0.1}
        if step % 200 == 0:
            record.update(kl_pq=2.0 * np.exp(-step / 100), kl_qp=1.0, js=float("nan"))
        out.append(record)
    out[3]["loss"] = float("nan")
    out[4]["loss"] = None
    return out[::-1]  # order does not matter


def test_curves_figure_draws_present_keys_skips_missing_and_nan():
    fig = curves_figure(records(), "fgan on ring8")
    assert fig.get_suptitle() == "fgan on ring8"
    losses, divergences = plot_axes(fig)
    assert (losses.get_title(), divergences.get_title()) == (
        "training losses",
        "ground-truth divergences",
    )
    assert losses.get_xlabel() == divergences.get_xlabel() == "step"
    assert divergences.get_ylabel() == "divergence (nats)"
    loss_lines = {line.get_label(): line for line in losses.lines}
    assert set(loss_lines) == {"model loss", "critic's divergence estimate"}  # no critic_loss
    assert len(loss_lines["model loss"].get_xdata()) == 21 - 2  # a NaN and a None dropped
    assert np.all(np.diff(loss_lines["model loss"].get_xdata()) > 0)
    lines = {line.get_label(): line for line in divergences.lines}
    assert set(lines) == {"KL(P‖Q)", "KL(Q‖P)"}  # js is all NaN: no line
    np.testing.assert_array_equal(lines["KL(P‖Q)"].get_xdata(), [0, 200, 400, 600, 800, 1000])
    assert divergences.get_yscale() == "log"  # kl_pq spans 2e0 .. 2e-10
    assert losses.get_yscale() == "log"  # 1 .. 1e-3
    assert "KL(P‖Q)" in legend_labels(fig)
    rendered(fig)


def test_curves_figure_stays_linear_for_signed_losses_and_copes_with_nothing():
    steps = range(0, 100, 10)
    fig = curves_figure([{"step": s, "loss": -1.0 + 0.01 * s} for s in steps], "gan")
    losses, divergences = plot_axes(fig)
    assert losses.get_yscale() == "linear"
    assert len(divergences.lines) == 0 and divergences.texts[0].get_text() == "no values logged"
    rendered(fig)


def sweep_rows() -> list[dict]:
    rows = []
    for pi in ("0.1", "0.5", "0.9"):
        for generator in ("minimax", "nonsaturating"):
            for seed in ("0", "1"):
                kl = float(pi) + (0.1 if generator == "minimax" else 0.0) + 0.01 * int(seed)
                rows.append(
                    {"objective.pi": pi, "objective.generator": generator, "trainer.seed": seed,
                     "status": "ok", "kl_pq": str(kl), "kl_qp": str(1 - kl), "js": ""}
                )  # fmt: skip
    rows.append({"objective.pi": "0.3", "objective.generator": "minimax", "status": "failed",
                 "kl_pq": "100", "kl_qp": "100"})  # fmt: skip
    return rows


def test_sweep_figure_draws_one_line_per_group_with_one_point_per_value():
    fig = sweep_figure(
        sweep_rows(), "objective.pi", ["kl_pq", "kl_qp"], ["objective.generator"], "JS_π sweep"
    )
    assert fig.get_suptitle() == "JS_π sweep"
    axes = plot_axes(fig)
    assert [ax.get_title() for ax in axes] == ["KL(P‖Q)", "KL(Q‖P)"]
    assert [ax.get_ylabel() for ax in axes] == ["KL(P‖Q) (nats)", "KL(Q‖P) (nats)"]
    for ax in axes:
        assert ax.get_xlabel() == "objective.pi"
        labels = [line.get_label() for line in ax.lines]
        assert labels == ["objective.generator=minimax", "objective.generator=nonsaturating"]
        for line in ax.lines:  # the failed row at π = 0.3 is skipped; seeds are averaged
            np.testing.assert_array_equal(line.get_xdata(), [0.1, 0.5, 0.9])
    minimax = axes[0].lines[0]
    np.testing.assert_allclose(minimax.get_ydata(), [0.205, 0.605, 1.005])
    assert legend_labels(fig) == [
        "objective.generator=minimax",
        "objective.generator=nonsaturating",
    ]
    rendered(fig)


def test_sweep_figure_groups_by_several_keys_and_reports_a_missing_metric():
    fig = sweep_figure(
        sweep_rows(), "objective.pi", ["kl_pq", "js"], ["objective.generator", "trainer.seed"], "s"
    )
    kl_pq, js = plot_axes(fig)
    assert len(kl_pq.lines) == 4
    assert all(len(line.get_xdata()) == 3 for line in kl_pq.lines)
    assert len(js.lines) == 0 and js.texts[0].get_text() == "no 'js' values"
    assert len(legend_labels(fig)) == 4
    rendered(fig)


def test_image_grid_places_each_image_in_its_tile():
    images = np.zeros((5, 4, 3, 3), np.uint8)
    for i in range(5):
        images[i] = 50 * i
    mosaic = image_grid(images, nrow=3)
    assert mosaic.shape == (2 * (4 + PAD) + PAD, 3 * (3 + PAD) + PAD, 3)
    for i in range(5):
        row, column = divmod(i, 3)
        top, left = PAD + row * (4 + PAD), PAD + column * (3 + PAD)
        np.testing.assert_allclose(mosaic[top : top + 4, left : left + 3], 50 * i / 255)
    np.testing.assert_allclose(mosaic[:PAD, :], 1.0)  # white padding
    gray = image_grid(images[..., :1].astype(float) / 255, nrow=3)
    np.testing.assert_allclose(gray, mosaic)


def test_image_grid_figure():
    images = RNG.uniform(size=(20, 16, 16, 3))
    fig = image_grid_figure(images, nrow=5, title="mlp on celeba, step 100")
    (ax,) = fig.axes
    assert ax.get_title() == "mlp on celeba, step 100"
    assert ax.images[0].get_array().shape == (4 * 18 + 2, 5 * 18 + 2, 3)
    rendered(fig)


def moving_frames(n: int = 4) -> list[Frame]:
    z = np.random.default_rng(1).normal(size=(60, 2))
    return [Frame(100 * i, z * (1 - i / n), -z * (1 + i)) for i in range(n)]


def gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB"), dtype=float))
    return frames


def test_write_animation_writes_one_gif_frame_per_frame(tmp_path, monkeypatch):
    monkeypatch.setattr(FFMpegWriter, "isAvailable", classmethod(lambda cls: False))
    frames = moving_frames(5)
    paths = write_animation(
        frames, EXTENT, XS, YS, LOG_P, tmp_path / "a" / "train.gif", tmp_path / "train.mp4", "gan"
    )
    assert paths == [tmp_path / "a" / "train.gif"]  # no ffmpeg: no MP4
    images = gif_frames(paths[0])
    assert len(images) == len(frames)
    assert images[0].shape == (round(5.2 * ANIMATION_DPI), round(10.4 * ANIMATION_DPI), 3)
    assert np.abs(images[0] - images[-1]).mean() > 0.5  # the samples moved


def test_write_animation_of_1d_data_without_gradients(tmp_path):
    frames = [Frame(s, SAMPLES1 * (1 + s / 100)) for s in (0, 10, 20)]
    paths = write_animation(frames, (-4.0, 4.0, 0.0, 0.0), X1, None, LOG_P1, tmp_path / "b.gif")
    with Image.open(paths[0]) as gif:
        assert gif.n_frames == 3
        # one panel (no gradient field): 5.6 × 4.6 inches
        assert gif.size == (round(5.6 * ANIMATION_DPI), round(4.6 * ANIMATION_DPI))


def test_write_animation_keeps_frames_of_a_repeated_step(tmp_path):
    # a resumed run may record one step twice; identical GIF frames would be merged by Pillow
    frames = [Frame(5, SAMPLES), Frame(5, SAMPLES), Frame(6, SAMPLES)]
    (path,) = write_animation(frames, EXTENT, XS, YS, LOG_P, tmp_path / "c.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 3


def test_write_animation_needs_a_frame(tmp_path):
    with pytest.raises(ValueError, match="at least one frame"):
        write_animation([], EXTENT, XS, YS, LOG_P, tmp_path / "e.gif")


@pytest.mark.skipif(not FFMpegWriter.isAvailable(), reason="ffmpeg is not installed")
def test_write_animation_writes_an_mp4_when_ffmpeg_is_available(tmp_path):
    frames = moving_frames(3)
    paths = write_animation(
        frames, EXTENT, XS, YS, LOG_P, tmp_path / "d.gif", tmp_path / "d.mp4", "gan"
    )
    assert paths == [tmp_path / "d.gif", tmp_path / "d.mp4"]
    assert (tmp_path / "d.mp4").stat().st_size > 1000
    if shutil.which("ffprobe"):
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
             "stream=nb_read_frames", "-of", "csv=p=0", str(tmp_path / "d.mp4")],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        assert int(probe.stdout.strip()) == len(frames)


def test_animation_frame_draws_samples_and_gradients_on_the_given_axes():
    fig = new_figure(8, 4)
    left, right = fig.subplots(1, 2)
    frame = moving_frames(2)[1]
    norm = magnitude_norm([np.log10(np.linalg.norm(frame.directions, axis=1))])
    animation_frame((left, right), frame, EXTENT, XS, YS, LOG_P, norm)
    np.testing.assert_allclose(left.collections[-1].get_offsets(), frame.samples)
    quiver = quiver_of(right)
    arrows = np.stack([quiver.U, quiver.V], axis=1)
    unit = frame.directions / np.linalg.norm(frame.directions, axis=1, keepdims=True)
    np.testing.assert_allclose(arrows / np.linalg.norm(arrows, axis=1, keepdims=True), unit)
    assert left.get_xlim() == right.get_xlim() == EXTENT[:2]
    animation_frame((left, right), frame, EXTENT, XS, YS, LOG_P, norm)  # redraws, not stacks
    assert len([c for c in right.collections if isinstance(c, Quiver)]) == 1
    rendered(fig)


def test_plotting_needs_neither_pyplot_nor_torch():
    code = (
        "import sys, gandiv.plotting; "
        "assert 'matplotlib.pyplot' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
