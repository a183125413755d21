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
import os
import re
import resource
from pathlib import Path
from typing import Any

import torch

from gandiv import config as C
from gandiv.build import build_dataset, build_model, build_objective
from gandiv.data.images import ImageData
from gandiv.data.toy import ToyData
from gandiv.divergences import FDivergence
from gandiv.errors import NumericalError, UserError
from gandiv.evaluation.ideal import IdealSearch, Landscape
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
    config = C.load_train_config(run.config_path)
    state = run.load_checkpoint()
    check_trained(run, state)
    return config, state


def step_in_range(state: dict[str, Any], most: int) -> bool:
    """Whether the checkpoint's step is a whole number a run of `most` steps could reach."""
    step = state.get("step")
    return isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= most


def nonfinite_parameters(state: dict[str, Any]) -> list[str]:
    """The model's and objective's floating-point entries of a checkpoint holding NaN/Inf."""
    return [
        f"{part}.{name}"
        for part in ("model", "objective")
        for name, value in (state.get(part) or {}).items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(value.isfinite().all())
    ]


def check_trained(run: RunDirectory, state: dict[str, Any]) -> None:
    """A checkpoint worth evaluating or drawing: a step a run could have reached, and finite
    parameters (a diverged run's are NaN/Inf: exit 3, as training reports it)."""
    step = state.get("step")
    if not step_in_range(state, C.MAX_INT):
        raise UserError(
            str(run.checkpoint_path),
            f"records step {step!r}, which no run reaches (a step is a whole number >= 0); "
            "the checkpoint is damaged",
        )
    bad = nonfinite_parameters(state)
    if bad:
        raise NumericalError(
            f"{run.checkpoint_path}: the parameters are non-finite (NaN/Inf) at step {step} "
            f"({', '.join(bad[:3])}); this run diverged and cannot be evaluated or drawn: train it "
            "again (e.g. a smaller trainer.lr)"
        )


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
    packing = getattr(objective, "packing", 1)
    if row is None and packing > 1:
        return (
            f"objective.packing={packing}: the critic compares P^{packing} with Q^{packing}, and "
            "the game's divergence between them is no divergence of P and Q with a known ideal"
        )
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


# --------------------------------------------------------------------------------------------
# The machine's resources, checked before a command allocates anything.
def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return os.cpu_count() or 1


def check_threads(key: str, threads: int | None) -> None:
    """Torch threads beyond the cores only slow a run down, and thousands exhaust the process."""
    cores = machine_cores()
    if threads is not None and threads > cores:
        raise UserError(
            key, f"must be between 1 and {cores} (the cores this machine gives it), got {threads}"
        )


def _proc_value(path: str, field: str) -> int | None:
    """A field of a /proc file in kB, as bytes (None where it is not there)."""
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> tuple[int, str] | None:
    """The memory this process can still allocate, and what limits it: the machine's available
    memory, or the process's address-space limit (ulimit -v) if that is lower."""
    limits = []
    free = _proc_value("/proc/meminfo", "MemAvailable")
    if free is not None:
        limits.append((free, "available on this machine"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    used = _proc_value("/proc/self/status", "VmSize")
    if soft != resource.RLIM_INFINITY and used is not None:
        limits.append((max(soft - used, 0), "left under this process's limit (ulimit -v)"))
    return min(limits) if limits else None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def check_memory(needs: dict[str, tuple[int, str]]) -> None:
    """Refuse a command whose estimated memory (`gandiv.build.memory_needs`) exceeds what is
    available, naming the key that needs the most."""
    available = available_memory()
    total = sum(need for need, _ in needs.values())
    if available is None or not needs or total <= available[0]:
        return
    key, (need, what) = max(needs.items(), key=lambda item: item[1][0])
    keys = [k for k in re.findall(r"([a-z_]+\.[a-z_.]+)=", what) if k != key] if "," in what else []
    raise UserError(
        key,
        f"this needs about {_size(total)} of memory ({what}: {_size(need)}), but "
        f"{_size(available[0])} are {available[1]}; make {' or '.join([key, *keys[:1]])} smaller",
    )
