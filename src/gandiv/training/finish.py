"""A trained run's final files: the final figures, samples.npy and summary.json.

The summary holds the run's status, steps, timings, last losses and metrics, the fitted
parameters worth reading directly (`model_parameters`), and its health (`health`, which reads the
metrics, the final samples and the gap to the ideal that the caller put in ``summary["ideal"]``).
samples.npy is drawn from one fixed noise stream (`SAMPLES_SEED`) for every run, so runs compare.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gandiv.data.images import to_uint8_images
from gandiv.data.toy import Mixture
from gandiv.evaluation.modes import mode_metrics
from gandiv.evaluation.report import sample_in_chunks
from gandiv.models import GaussianModel, LinearGenerator
from gandiv.models.base import GenerativeModel
from gandiv.training.figures import FigureSet, ImageFigures
from gandiv.training.loop import TrainResult
from gandiv.training.run_dir import RunDirectory

log = logging.getLogger("gandiv")

# Seed of the fixed noise behind samples.npy (the same for every run, so runs are comparable).
SAMPLES_SEED = 20_240_601
# Image runs save this many final samples (uint8 NHWC) at most in samples.npy.
IMAGE_SAMPLES = 64


def model_parameters(model: GenerativeModel) -> dict[str, Any]:
    """Fitted parameters worth reading directly (the Gaussian's mean and covariance)."""
    if isinstance(model, GaussianModel):
        return {
            "mean": model.mean.detach().cpu().double().tolist(),
            "cov": model.covariance.detach().cpu().double().tolist(),
        }
    if isinstance(model, LinearGenerator):  # x = A z + b
        return {
            "weight": model.weight.detach().cpu().double().tolist(),
            "bias": model.bias.detach().cpu().double().tolist(),
        }
    return {}


def write_final_files(
    run: RunDirectory,
    model: GenerativeModel,
    result: TrainResult,
    summary: dict[str, Any],
    num_samples: int,
    started: float,
    device: torch.device,
    figures: FigureSet | None,
    health: Callable[[list[dict[str, Any]], np.ndarray | None, Any], dict[str, Any]] | None = None,
    mixture: Mixture | None = None,
) -> dict[str, Any] | None:
    """Write the run's final figures, samples.npy and summary.json; return its health block
    (None when not assessed: `health` None, or a torchrun rank that writes nothing). With data
    that have modes (`mixture`), the summary gets the final samples' mode metrics (modes_*)."""
    model.eval()
    final_samples = None
    if figures is not None:
        drawing = time.perf_counter()
        figures.write(run, result.step, run.read_metrics(), final=True)
        summary["figures_time_s"] = round(time.perf_counter() - drawing, 4)
    noise = torch.Generator(device=device).manual_seed(SAMPLES_SEED)
    if isinstance(figures, ImageFigures):  # a modest number of uint8 NHWC images
        run.save_samples(
            to_uint8_images(sample_in_chunks(model, min(num_samples, IMAGE_SAMPLES), noise))
        )
    else:
        with torch.no_grad():
            samples = model.sample(num_samples, noise)
        final_samples = samples.detach().cpu().float().numpy()
        run.save_samples(final_samples)
    steps_per_s = result.steps_this_session / max(result.session_train_time_s, 1e-9)
    summary.update(
        {
            "status": "completed",
            "steps": result.step,
            "wall_time_s": round(time.perf_counter() - started, 4),
            "train_time_s": round(result.train_time_s, 4),
            # this session's time outside the training steps (figures_time_s: the final figures)
            "eval_time_s": round(result.eval_time_s, 4),
            "frames_time_s": round(result.frames_time_s, 4),
            "checkpoint_time_s": round(result.checkpoint_time_s, 4),
            "steps_per_s": round(steps_per_s, 2),
            **result.last_losses,
            **result.last_eval,
            "params": model_parameters(model),
        }
    )
    if mixture is not None and final_samples is not None:
        modes = mode_metrics(torch.from_numpy(final_samples).double(), mixture)
        summary.update({f"modes_{key}": value for key, value in modes.items()})
    if health is not None and run.writes:  # (after summary["ideal"], whose gap it reads)
        ideal = summary.get("ideal")
        gap = ideal.get("gap") if isinstance(ideal, dict) else None
        if isinstance(ideal, dict) and ideal.get("achieved_infinite"):
            gap = math.inf  # the fit's target divergence is infinite
        summary["health"] = health(run.read_metrics(), final_samples, gap)
    run.write_summary(summary)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in {**result.last_losses, **result.last_eval}.items())
    log.info(
        "done: %d steps, %.1f steps/s; %s; results in %s", result.step, steps_per_s, shown, run.path
    )
    return summary.get("health")
