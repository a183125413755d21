"""What the commands share about a run: its objects built from its config (`restore`: as its
checkpoint left them), its figures, and the search for its ideal fit.

`gandiv train` draws figures and records the ideal of a run it trains, `gandiv eval` reports the
ideal of a finished run (and its nearest divergence), `gandiv plot` redraws a finished run's
figures with the ideal dashed; all three build these the same way, here. The ideal searches are
cached per process (`cached_search`): a sweep's jobs, and an evaluation's nearest-divergence
rows, share them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from gandiv import config as C
from gandiv.build import build_dataset, build_model, build_objective
from gandiv.data.images import ImageData
from gandiv.data.toy import ToyData
from gandiv.divergences import FDivergence
from gandiv.errors import UserError
from gandiv.evaluation.ideal import GaussianFit, IdealSearch, Landscape, compare
from gandiv.evaluation.spread import displayed_data
from gandiv.models import GaussianModel
from gandiv.models.base import GenerativeModel
from gandiv.objectives.base import Objective
from gandiv.objectives.likelihood import Direct
from gandiv.training.figures import ImageFigures, RunFigures
from gandiv.training.run_dir import RunDirectory

log = logging.getLogger("gandiv")


def image_size(data: ToyData | ImageData) -> int | None:
    """The side of an image dataset's images (None for vector data)."""
    return data.size if isinstance(data, ImageData) else None


def load_run(path: Path) -> tuple[C.TrainConfig, dict[str, Any]]:
    """The validated config and the checkpoint of a finished run."""
    run = RunDirectory(path)
    return C.load_train_config(run.config_path), run.load_checkpoint()


def restore(
    path: Path, config: C.TrainConfig, state: dict[str, Any], device: torch.device
) -> tuple[ToyData | ImageData, GenerativeModel, Objective]:
    """The data (images: not yet read), and the model and objective of a run as its checkpoint
    left them (eval mode)."""
    data = build_dataset(config.dataset)
    model = build_model(config.model, data.dim, image_size(data)).to(device)
    objective = build_objective(
        config.objective, data, config.critic, config.trainer.grid_points, model=model
    ).to(device)
    objective.begin_step(int(state["step"]))  # e.g. the σ an annealed spread noise reached
    try:
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
    except (RuntimeError, KeyError) as err:
        raise UserError(
            str(RunDirectory(path).checkpoint_path),
            f"does not match the run's config ({str(err).splitlines()[0].rstrip(':')}); "
            "was it copied from another run?",
        ) from None
    model.eval().requires_grad_(False)
    objective.eval().requires_grad_(False)
    return data, model, objective


def run_title(config: C.TrainConfig) -> str:
    return f"{config.objective.name} · {config.dataset.name} · model {config.model.name}"


def run_figures(
    config: C.TrainConfig,
    data: ToyData | ImageData,
    model: GenerativeModel,
    objective: Objective,
    device: torch.device,
    ideal: IdealSearch | str,
) -> RunFigures | ImageFigures:
    """The run's figures, drawn over the density the objective compares the model with, with the
    ideal fit dashed (images: sample grids and curves)."""
    if isinstance(data, ImageData):
        return ImageFigures(model, run_title(config), config.plot.samples, device)
    shown = displayed_data(data, objective.spread)
    title = run_title(config)
    ideals = []
    label = "ideal fit"
    if isinstance(ideal, IdealSearch):
        ideals = [(o.fit.mean, o.fit.cov) for o in ideal.global_optima]
        label = f"ideal fit ({ideal.row.name})"
    return RunFigures(
        shown,
        model,
        objective,
        title,
        config.plot.samples,
        config.plot.grid,
        device,
        ideals=ideals,
        ideal_label=label,
    )


# The ideal searches of this process, by dataset config and row (a sweep's jobs share them).
_IDEALS: dict[str, IdealSearch] = {}


def ideal_search(
    config: C.TrainConfig,
    data: ToyData | ImageData,
    model: GenerativeModel,
    objective: Objective,
) -> IdealSearch | str:
    """The search for the ideal fit of the objective's target divergence, or why there is none."""
    row = objective.divergence
    if row is None:
        return (
            f"objective={config.objective.name}: no divergence is known that its model step "
            "minimises with an optimal critic"
        )
    if objective.spread is not None:
        return (
            "with spread/instance noise the objective's divergence is between the noised "
            "distributions; their ideal is not computed"
        )
    if not isinstance(model, GaussianModel):
        return (
            f"the ideal is computed over the Gaussian model class (model=gaussian); "
            f"model={config.model.name}'s global optimum has no reliable search"
        )
    if isinstance(data, ImageData) or not data.has_density:
        return "the data have no density"
    if data.dim > 2:
        return f"the ideal is computed by quadrature in 1-D and 2-D; these data are {data.dim}-D"
    if isinstance(objective, Direct) and objective.search is not None:
        return objective.search
    return cached_search(config, data, row)


def cached_search(config: C.TrainConfig, data: ToyData, row: FDivergence) -> IdealSearch:
    """The ideal search of `row` on these data, once per process."""
    key = f"{config.dataset!r} {row.name}"
    if key not in _IDEALS:
        _IDEALS[key] = IdealSearch(Landscape(data), row).run()
    return _IDEALS[key]


def ideal_block(found: IdealSearch | str, model: GenerativeModel) -> dict[str, Any]:
    """summary.json's ``ideal``: the fit against its target's ideal (`compare`), or the reason."""
    if isinstance(found, str):
        return {"divergence": None, "reason": found}
    assert isinstance(model, GaussianModel)
    fit = GaussianFit.of(model.mean.detach().cpu(), model.covariance.detach().cpu())
    block = compare(found, fit)
    gap = "inf" if block["gap"] is None else f"{block['gap']:.4g}"
    log.info(
        "ideal %s fit: %.6g (%d local optima); this fit: gap %s nats, 2-Wasserstein distance %.3g",
        block["divergence"],
        block["value"],
        len(block["local_optima"]),
        gap,
        block["distance"],
    )
    return block
