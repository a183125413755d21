"""The arrays behind a run's figures: the one place where data, model and objective become pictures.

`RunFigures` evaluates the data density on a plotting grid once, draws model samples from a fixed
latent z (the same noise in every frame, so an animation follows the same points), computes the
direction the model's loss pushes each sample (−∇_x of `Objective.sample_loss`), and hands arrays
to `gandiv.plotting`. It never touches the training generator, so drawing never changes training.
"""

from __future__ import annotations

import io
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.distributions import MultivariateNormal

from gandiv.data.images import to_uint8_images
from gandiv.data.toy import ToyData
from gandiv.models.base import GenerativeModel
from gandiv.objectives.base import Objective
from gandiv.plotting.animation import Frame, write_animation
from gandiv.plotting.critic import critic_curve_figure, critic_figure
from gandiv.plotting.curves import curves_figure
from gandiv.plotting.density import density_curve_figure, density_figure
from gandiv.plotting.gradients import gradient_curve_figure, gradient_field_figure
from gandiv.plotting.images import image_grid_figure, write_image_animation
from gandiv.plotting.style import Extent
from gandiv.training.run_dir import RunDirectory, atomic_write_bytes

logging.getLogger("matplotlib.animation").setLevel(logging.WARNING)  # not one line per GIF

# Seeds of the plotting noise: the fixed latent z of every frame, and the real sample shown.
LATENT_SEED = 7_777
REAL_SEED = 8_888
DPI = 100


def save_figures(run: RunDirectory, figures: Mapping[str, Figure]) -> list[Path]:
    """Save each figure as ``figures/NAME.png`` in the run directory; return the paths."""
    written = []
    for name, figure in figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
        path = run.path / "figures" / f"{name}.png"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


class FigureSet(ABC):
    """A run's figures as the loop and `gandiv plot` use them: animation frames at their cadence
    (kept in checkpoints), and the figures written into ``figures/`` with, at the end, the
    animation."""

    frames: list[Any]

    @abstractmethod
    def frame(self, step: int) -> None:
        """Record an animation frame at `step`."""

    @abstractmethod
    def figures(self, step: int, records: Sequence[Mapping[str, Any]]) -> dict[str, Figure]:
        """Every figure at `step`, by name (``records``: the metrics lines so far)."""

    @abstractmethod
    def _write_animation(self, directory: Path) -> list[Path]:
        """Write the animation of the frames into `directory` atomically; return its files."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def write(
        self, run: RunDirectory, step: int, records: Sequence[Mapping[str, Any]], final: bool
    ) -> list[Path]:
        """Save every figure into ``figures/`` (and, at the end, the animation)."""
        written = save_figures(run, self.figures(step, records))
        if final and len(self.frames) > 1:
            written += self._write_animation(run.path)
        return written


class RunFigures(FigureSet):
    """Figures of one run (1-D or 2-D data): density, critic, gradient field, curves, animation."""

    def __init__(
        self,
        data: ToyData,
        model: GenerativeModel,
        objective: Objective,
        title: str,
        samples: int,
        grid: int,
        device: torch.device,
        ideals: Sequence[tuple[Tensor, Tensor]] = (),
        ideal_label: str = "ideal fit",
    ) -> None:
        """`ideals`: (mean, covariance) of the ideal Gaussian fit (and of any tied with it),
        drawn dashed in the density figure and the animation."""
        if data.dim > 2:
            raise ValueError("figures are drawn for 1-D and 2-D data only")
        self.data, self.model, self.objective = data, model, objective
        self.title, self.n, self.device = title, samples, device
        bounds = data.bounds().double().cpu().numpy()
        margin = 0.05 * (bounds[:, 1] - bounds[:, 0])
        low, high = bounds[:, 0] - margin, bounds[:, 1] + margin
        self.xs = np.linspace(low[0], high[0], grid)
        self.ys = np.linspace(low[1], high[1], grid) if data.dim == 2 else None
        self.extent: Extent = (
            (low[0], high[0], low[1], high[1]) if data.dim == 2 else (low[0], high[0], 0.0, 1.0)
        )
        if self.ys is None:
            points = self.xs[:, None]
        else:
            gx, gy = np.meshgrid(self.xs, self.ys)
            points = np.stack([gx.ravel(), gy.ravel()], axis=1)
        self.points = torch.as_tensor(points, dtype=torch.float64)
        if self.ys is None:
            log_p = data.log_prob(self.points)
        else:  # the same points as the product of (xs, ys), for sums over many atoms
            axes = (torch.as_tensor(self.xs), torch.as_tensor(self.ys))
            product = data.log_prob_grid(axes, torch.cartesian_prod(*axes))
            log_p = product.reshape(grid, grid).T.reshape(-1)
        self.log_p = self._on_grid(log_p.numpy())
        self.ideal_label = ideal_label
        self.ideals = [
            self._on_grid(
                MultivariateNormal(mean.double().cpu(), cov.double().cpu())
                .log_prob(self.points)
                .numpy()
            )
            for mean, cov in ideals
        ]
        self.real = data.sample(samples, torch.Generator().manual_seed(REAL_SEED)).to(device)
        self.frames: list[Frame] = []

    # ------------------------------------------------------------------------------------------
    def _on_grid(self, values: np.ndarray) -> np.ndarray:
        return values if self.ys is None else values.reshape(len(self.ys), len(self.xs))

    def _model_samples(self) -> torch.Tensor:
        noise = torch.Generator(device=self.device).manual_seed(LATENT_SEED)
        with torch.no_grad():
            return self.model.sample(self.n, noise)

    def _directions(self, samples: torch.Tensor) -> np.ndarray | None:
        """−∇_x of the model's loss at each sample (None if the loss does not push samples)."""
        x = samples.detach().clone().requires_grad_(True)
        try:
            loss = self.objective.sample_loss(self.model, x, self.real)
        except NotImplementedError:
            return None
        (grad,) = torch.autograd.grad(loss, x)
        return (-grad).cpu().numpy()

    @contextmanager
    def _frozen(self) -> Iterator[None]:
        """Evaluation mode while drawing: a spectrally normalised critic must not run its power
        iteration (that would change training); the previous modes are restored after."""
        modes = [(m, m.training) for m in (self.model, self.objective)]
        for module, _ in modes:
            module.eval()
        try:
            yield
        finally:
            for module, training in modes:
                module.train(training)

    def frame(self, step: int) -> None:
        """Record one animation frame (model samples from the fixed z, and their push)."""
        with self._frozen():
            samples = self._model_samples()
            self.frames.append(Frame(step, samples.cpu().numpy(), self._directions(samples)))

    def figures(self, step: int, records: Sequence[Mapping[str, Any]]) -> dict[str, Figure]:
        """Every figure of the run at `step`, by file name."""
        with self._frozen():
            return self._figures(step, records)

    def _figures(self, step: int, records: Sequence[Mapping[str, Any]]) -> dict[str, Figure]:
        title = f"{self.title} · step {step}"
        samples = self._model_samples()
        shown = samples.cpu().numpy()
        grid_points = self.points.to(self.device, torch.get_default_dtype())
        log_q = None
        if self.model.has_density:
            with torch.no_grad():
                log_q = self._on_grid(self.model.log_prob(grid_points).double().cpu().numpy())
        out: dict[str, Figure] = {}
        if self.ys is None:
            out["density"] = density_curve_figure(
                self.xs,
                self.log_p,
                log_q,
                shown,
                title,
                ideals=self.ideals,
                ideal_label=self.ideal_label,
            )
        else:
            out["density"] = density_figure(
                self.extent,
                self.xs,
                self.ys,
                self.log_p,
                log_q,
                shown,
                title,
                ideals=self.ideals,
                ideal_label=self.ideal_label,
            )
        values = None
        if self.objective.uses_critic:
            with torch.no_grad():
                try:  # (a packed critic is a function of several points: no figure)
                    values = self._on_grid(self.objective.critic_output(grid_points).cpu().numpy())
                except NotImplementedError:
                    values = None
        if values is not None:
            real = self.real.cpu().numpy()
            label = "critic output V(x)"
            if self.ys is None:
                out["critic"] = critic_curve_figure(self.xs, values, real, shown, title, label)
            else:
                out["critic"] = critic_figure(self.xs, self.ys, values, real, shown, title, label)
        directions = self._directions(samples)
        if directions is not None:
            if self.ys is None:
                out["gradient_field"] = gradient_curve_figure(
                    self.xs, self.log_p, shown, directions, title
                )
            else:
                out["gradient_field"] = gradient_field_figure(
                    self.xs, self.ys, self.log_p, shown, directions, title
                )
        if records:
            out["curves"] = curves_figure(records, self.title)
        return out

    def _write_animation(self, directory: Path) -> list[Path]:
        gif, mp4 = directory / "animation.gif", directory / "animation.mp4"
        tmp_gif, tmp_mp4 = gif.with_name(".animation.tmp.gif"), mp4.with_name(".animation.tmp.mp4")
        made = write_animation(
            self.frames,
            self.extent,
            self.xs,
            self.ys,
            self.log_p,
            tmp_gif,
            tmp_mp4,
            title_prefix=self.title,
            ideals=self.ideals,
            ideal_label=self.ideal_label,
        )
        final = []
        for tmp in made:
            target = gif if tmp == tmp_gif else mp4
            os.replace(tmp, target)
            final.append(target)
        return final

    # frames travel in checkpoints, so a resumed run's animation starts at step 0 --------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": [f.step for f in self.frames],
            "samples": [torch.as_tensor(f.samples) for f in self.frames],
            "directions": [
                torch.as_tensor(f.directions) if f.directions is not None else None
                for f in self.frames
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.frames = [
            Frame(step, samples.numpy(), None if d is None else d.numpy())
            for step, samples, d in zip(
                state["steps"], state["samples"], state["directions"], strict=True
            )
        ]


class ImageFigures(FigureSet):
    """Figures of one image run, with `RunFigures`' interface: ``figures/samples.png`` (a grid of
    model samples from a fixed z), ``figures/curves.png`` and, with frames, ``animation.gif`` (the
    first `FRAME_IMAGES` of those samples at each frame step). Frames are kept as uint8 images,
    so they travel in checkpoints cheaply."""

    FRAME_IMAGES = 16
    NROW = 8

    def __init__(
        self, model: GenerativeModel, title: str, samples: int, device: torch.device
    ) -> None:
        self.model, self.title, self.device = model, title, device
        self.n = min(samples, 64)
        self.frames: list[tuple[int, np.ndarray]] = []

    def _samples(self, n: int) -> np.ndarray:
        """`n` model samples from the fixed z as uint8 (n, H, W, 3), drawn in evaluation mode
        (BatchNorm's running statistics stay as training left them)."""
        training = self.model.training
        self.model.eval()
        try:
            noise = torch.Generator(device=self.device).manual_seed(LATENT_SEED)
            with torch.no_grad():
                return to_uint8_images(self.model.sample(n, noise))
        finally:
            self.model.train(training)

    def frame(self, step: int) -> None:
        self.frames.append((step, self._samples(self.FRAME_IMAGES)))

    def figures(self, step: int, records: Sequence[Mapping[str, Any]]) -> dict[str, Figure]:
        title = f"{self.title} · step {step}"
        out = {"samples": image_grid_figure(self._samples(self.n), self.NROW, title)}
        if records:
            out["curves"] = curves_figure(records, self.title)
        return out

    def _write_animation(self, directory: Path) -> list[Path]:
        gif = directory / "animation.gif"
        temporary = gif.with_name(".animation.tmp.gif")
        write_image_animation(self.frames, temporary)
        os.replace(temporary, gif)
        return [gif]

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": [step for step, _ in self.frames],
            "images": [torch.from_numpy(images) for _, images in self.frames],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.frames = [
            (step, images.numpy())
            for step, images in zip(state["steps"], state["images"], strict=True)
        ]
