"""`gandiv plot run=DIR`: redraw a finished run's figures from its checkpoint and metrics.

The figures are those the run drew at its end (`gandiv.training.figures`), built as training
builds them (`gandiv.commands.runs`), and restored to the checkpoint's figure state (e.g. the
animation's frames so far), on the CPU.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from gandiv.commands.runs import ideal_search, load_run, restore, run_figures
from gandiv.data.images import ImageData
from gandiv.errors import UserError
from gandiv.training.run_dir import RunDirectory

log = logging.getLogger("gandiv")


def plot(cfg: DictConfig) -> None:
    """`gandiv plot run=DIR`: redraw the run's figures from its checkpoint and metrics."""
    run_value = cfg.get("run")
    extra = sorted(str(k) for k in set(cfg) - {"run"})
    if extra:
        raise UserError(extra[0], "unknown key; gandiv plot takes only run=DIR")
    if not isinstance(run_value, str):
        raise UserError("run", f"must be a run directory path, got {run_value!r}")
    run = RunDirectory(run_value)
    config, state = load_run(run.path)
    device = torch.device("cpu")
    data, model, objective = restore(run.path, config, state, device)
    if data.dim > 2 and not isinstance(data, ImageData):
        raise UserError(
            "run", f"figures are drawn for 1-D and 2-D data; this run's is {data.dim}-D"
        )
    figures = run_figures(
        config, data, model, objective, device, ideal_search(config, data, model, objective)
    )
    if state.get("figures") is not None:
        figures.load_state_dict(state["figures"])
    written = figures.write(run, int(state["step"]), run.read_metrics(), final=True)
    log.info("drew %s", ", ".join(str(p.relative_to(run.path)) for p in written))
