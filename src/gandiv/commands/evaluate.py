"""`gandiv eval run=DIR`: DIR/eval.json for a finished run, or for every job of a sweep (with
eval.csv and the rebuilt sweep summary at its root).

This is where `gandiv eval`'s config is read: the run's own config and checkpoint restore its
objects, ``eval.*`` becomes plain settings, and `gandiv.evaluation.report` decides which metrics
the run gets. Here too: the independent critic's architecture for an image run, the ideal searches
(cached with the training's), and the names of the config keys that user errors report.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gandiv import config as C
from gandiv.build import build_critic, memory_needs, resolve_device
from gandiv.commands.runs import (
    cached_search,
    check_memory,
    check_threads,
    ideal_search,
    load_run,
    restore,
    run_title,
)
from gandiv.data.images import ImageData, ImageSplits
from gandiv.data.splits import ToySplits
from gandiv.divergences import DIVERGENCE_NAMES
from gandiv.errors import NumericalError, UserError
from gandiv.evaluation.critic import CriticBudget, critic_updates, independent_critics
from gandiv.evaluation.report import CriticEstimates, ideals_report, image_report, vector_report
from gandiv.models.base import GenerativeModel
from gandiv.objectives.base import Objective
from gandiv.objectives.spread import SpreadKL
from gandiv.sweep import (
    SUMMARY_FILES,
    check_summary_places,
    csv_text,
    job_rows,
    write_summary_file,
    write_sweep_summary,
)
from gandiv.training.figures import save_figures
from gandiv.training.run_dir import RunDirectory

log = logging.getLogger("gandiv")

# eval.critic.steps=auto: each independent critic's updates on vector data, and on images on a
# GPU.
AUTO_CRITIC_STEPS = 1000
# eval.critic.steps=auto on images on the CPU: one update of the 64×64 DCGAN critic (width 64,
# batch 64, with the generator's samples) took 0.9–1.8 s on the 2-core CPU, so 1,000 updates of
# each of two critics took over 20 minutes; this many keeps a tiny run's evaluation under a
# minute (benchmarks/README.md, image evaluation).
CPU_IMAGE_CRITIC_STEPS = 20
# Progress lines while the independent critics train: one per this share of their updates.
PROGRESS_LINES = 10


def critic_steps(setting: int | str, images: bool, device: torch.device) -> tuple[int, str]:
    """eval.critic.steps resolved for a run (an explicit number as given; ``auto`` from the
    data and the device), and the log's line saying what it is, why, and how to change it."""
    if setting != "auto":
        steps = int(setting)
        return steps, f"independent critics: {steps} updates each (eval.critic.steps={steps})"
    if images and device.type == "cpu":
        return CPU_IMAGE_CRITIC_STEPS, (
            f"independent critics: {CPU_IMAGE_CRITIC_STEPS} updates each (eval.critic.steps=auto "
            f"on the CPU: an image critic's update costs about a second here, {AUTO_CRITIC_STEPS} "
            f"on a GPU; a weak critic's estimates sit low: set eval.critic.steps=N for more)"
        )
    return AUTO_CRITIC_STEPS, (
        f"independent critics: {AUTO_CRITIC_STEPS} updates each (eval.critic.steps=auto on "
        f"{device.type}; set eval.critic.steps=N to change)"
    )


@contextmanager
def _critic_progress(total: int) -> Iterator[Callable[[], None]]:
    """A callback for each of the independent critics' `total` updates: a progress bar when
    stderr is a terminal, and a log line every tenth of the way."""
    bar = tqdm(
        total=total,
        desc="independent critics",
        unit="step",
        disable=None,
        dynamic_ncols=True,
    )
    started = time.perf_counter()
    every = max(1, -(-total // PROGRESS_LINES))
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        bar.update(1)
        if done % every == 0 or done == total:
            log.info(
                "independent critics: %d/%d updates, %.1f s",
                done,
                total,
                time.perf_counter() - started,
            )

    with logging_redirect_tqdm(), bar:
        yield advance


def evaluate_run(path: Path, options: C.EvalConfig) -> dict[str, Any]:
    """Every metric of the README's "Evaluation" for one finished run, on its held-out split."""
    config, state = load_run(path)
    device = resolve_device(options.device, "device")
    data, model, objective = restore(path, config, state, device)
    if not isinstance(data, ImageData):
        critic = options.eval.critic
        check_memory(
            memory_needs(
                config,
                data.dim,
                options.critic if critic.divergences else None,
                ("eval.critic.batch_size", critic.batch_size),
                (
                    "eval.critic.model_samples",
                    max(critic.model_samples or 0, options.eval.num_samples),
                ),
            )
        )
    if isinstance(data, ImageData):
        return _evaluate_images(path, options, config, state, data, model, objective, device)
    if isinstance(options.critic, C.DCGANCriticConfig):
        raise UserError(
            "critic",
            f"critic=dcgan is for images; this run's data are vectors (dataset="
            f"{config.dataset.name}); use critic=mlp",
        )
    splits = ToySplits(data, config.dataset.n_train, config.dataset.n_test, config.dataset.seed).to(
        device
    )
    settings = options.eval
    critic = settings.critic
    steps, why = critic_steps(critic.steps, False, device)
    if critic.divergences:
        log.info(why)
    budget = CriticBudget(
        steps=steps,
        batch_size=critic.batch_size,
        lr=critic.lr,
        ema=critic.ema,
        gradient_penalty=critic.gradient_penalty,
        one_sided=critic.one_sided,
        model_samples=critic.model_samples,
    )
    return vector_report(
        data,
        model,
        splits.test,
        step=int(state["step"]),
        seed=config.trainer.seed,
        generator=torch.Generator(device=device).manual_seed(options.seed),
        # its own CPU stream: the critics draw the same numbers as without it
        kde_noise=torch.Generator().manual_seed(options.seed),
        row=objective.divergence,
        spread=objective.spread,
        spread_kernel=objective.spread_kernel,
        bound=objective if isinstance(objective, SpreadKL) else None,
        critics=_critics(
            settings, lambda: build_critic(options.critic, data.dim).to(device), budget
        ),
        ideals=lambda: ideals_report(
            ideal_search(config, data, model, objective),
            model,
            data,
            settings.nearest,
            settings.pis,
            lambda row: cached_search(config, data, row),
        ),
        num_samples=settings.num_samples,
        grid_points=settings.grid_points,
        pis=settings.pis,
        kde_bandwidth=settings.kde_bandwidth,
        model_name=config.model.name,
        run_name=str(path),
    )


def _critics(
    settings: C.EvalOptions,
    make_critic: Callable[[], torch.nn.Module],
    budget: CriticBudget,
    progress: bool = False,
) -> CriticEstimates:
    """The independent critics' estimates of ``eval.critic.divergences`` (js_pi at the first of
    ``eval.pis``), cross-fitted over the two halves of the held-out data; with `progress`, shown
    as they train (`_critic_progress`)."""
    pi = settings.pis[0] if settings.pis else None

    def estimate(
        real: torch.Tensor,
        sample_model: Callable[[int, torch.Generator], torch.Tensor],
        generator: torch.Generator,
    ) -> dict[str, Any]:
        divergences = settings.critic.divergences
        try:
            if not progress:
                return independent_critics(
                    divergences, real, sample_model, make_critic, budget, generator, pi=pi
                )
            with _critic_progress(critic_updates(divergences, budget)) as advance:
                return independent_critics(
                    divergences,
                    real,
                    sample_model,
                    make_critic,
                    budget,
                    generator,
                    pi=pi,
                    progress=advance,
                )
        except ValueError as err:
            raise UserError("eval.critic.divergences", str(err)) from None

    return estimate


def _image_critic(options: C.EvalConfig, config: C.TrainConfig) -> C.DCGANCriticConfig:
    """The independent critic of an image run: critic=dcgan as given to eval, else the run's own
    critic settings (without its EMA), else conf/critic/dcgan.yaml."""
    if isinstance(options.critic, C.DCGANCriticConfig):
        return options.critic
    if isinstance(config.critic, C.DCGANCriticConfig):
        return dataclasses.replace(config.critic, ema=0.0)
    node = OmegaConf.load(str(files("gandiv.conf") / "critic" / "dcgan.yaml"))
    return cast(C.DCGANCriticConfig, C.to_schema("critic", node, C.DCGANCriticConfig))


def _evaluate_images(
    path: Path,
    options: C.EvalConfig,
    config: C.TrainConfig,
    state: dict[str, Any],
    data: ImageData,
    model: GenerativeModel,
    objective: Objective,
    device: torch.device,
) -> dict[str, Any]:
    """An image run's evaluation on its test partition (`image_report`); its sample grids are
    saved as figures/eval_samples.png, figures/test_images.png (and for a spread run
    figures/eval_reconstructions.png)."""
    settings = options.eval
    budget_of = settings.images
    splits = ImageSplits(data.load(progress=True), device, on_device=False)
    test = splits.test(budget_of.test_images)
    if len(test) < 4:
        raise UserError(
            str(splits.data.layout.partition_file),
            f"the test partition has {len(test)} images; evaluation needs at least 4",
        )
    critic_config = _image_critic(options, config)
    steps, why = critic_steps(settings.critic.steps, True, device)
    log.info(why)
    budget = CriticBudget(
        steps=steps,
        batch_size=budget_of.batch_size,
        lr=settings.critic.lr,
        ema=settings.critic.ema,
        gradient_penalty=settings.critic.gradient_penalty,
        one_sided=settings.critic.one_sided,
        model_samples=None,  # as many as the held-out images each critic scores
    )
    step = int(state["step"])
    report, grids = image_report(
        data,
        model,
        test,
        step=step,
        generator=torch.Generator(device=device).manual_seed(options.seed),
        bound=objective if isinstance(objective, SpreadKL) else None,
        critics=_critics(
            settings,
            lambda: build_critic(critic_config, data.dim, data.size).to(device),
            budget,
            progress=True,
        ),
        critic_architecture={
            k: v for k, v in dataclasses.asdict(critic_config).items() if k != "ema"
        },
        nll_images=budget_of.nll_images,
        grid=budget_of.grid,
        model_name=config.model.name,
        title=f"{run_title(config)} · step {step}",
    )
    report["independent_critic_budget"] = {
        "steps": steps,
        "setting": settings.critic.steps,
        "device": device.type,
        "batch_size": budget.batch_size,
    }
    save_figures(RunDirectory(path), grids)
    return report


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    return {prefix: value}


def _check_critic_settings(options: C.EvalConfig) -> None:
    """Settings that validate one by one but make no sense together: a list naming a value
    twice, a Wasserstein critic with nothing keeping it Lipschitz (its estimate grows without
    bound)."""
    settings = options.eval
    lists: list[tuple[str, list[str]]] = [
        ("eval.critic.divergences", settings.critic.divergences),
        ("eval.nearest", settings.nearest),
        ("eval.pis", [str(pi) for pi in settings.pis]),
    ]
    for key, values in lists:
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise UserError(key, f"lists {', '.join(twice)} more than once; name each once")
    lipschitz = settings.critic.gradient_penalty > 0 or getattr(
        options.critic, "spectral_norm", False
    )
    if "wasserstein" in settings.critic.divergences and not lipschitz:
        raise UserError(
            "eval.critic.gradient_penalty",
            "wasserstein needs a Lipschitz critic: a gradient penalty > 0 (e.g. "
            "eval.critic.gradient_penalty=10) or critic.spectral_norm=true; without either its "
            "estimate grows without bound, got 0",
        )


def evaluate(cfg: DictConfig) -> None:
    """`gandiv eval run=DIR`: DIR/eval.json; for a sweep, every job's, and eval.csv with the
    rebuilt sweep.csv/sweep.png at its root."""
    options = C.validate_eval_config(cfg)
    allowed = (*DIVERGENCE_NAMES, "wasserstein")
    for name in options.eval.critic.divergences:
        if name not in allowed:
            raise UserError(
                "eval.critic.divergences", f"'{name}' is not one of: {', '.join(allowed)}"
            )
    for name in options.eval.nearest:
        if name not in DIVERGENCE_NAMES:
            raise UserError(
                "eval.nearest", f"'{name}' is not one of: {', '.join(DIVERGENCE_NAMES)}"
            )
    _check_critic_settings(options)
    check_threads("threads", options.threads)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    root = Path(options.run)
    single = (root / ".hydra" / "config.yaml").is_file()
    runs = [root] if single else sorted(p.parent.parent for p in root.glob("*/.hydra/config.yaml"))
    jobs: list[dict[str, Any]] = []
    if not single:  # every job's files are read, every summary's place checked, before writing
        jobs = job_rows(root)
        check_summary_places(root, (*SUMMARY_FILES, "eval.csv"))
    rows = []
    for path in runs:
        started = time.perf_counter()
        try:
            report = evaluate_run(path, options)
        except (UserError, NumericalError) as err:
            if single:
                raise
            log.error("eval of %s failed: %s", path, err)
            rows.append({"job": path.name, "status": "failed", "error": str(err)})
            continue
        report["eval_time_s"] = round(time.perf_counter() - started, 3)
        RunDirectory(path).write_json("eval.json", report)
        rows.append({"job": path.name, "status": "ok", **_flatten("", report)})
        shown = ", ".join(
            f"{k}={v:.4g}"
            for k, v in _flatten("", report).items()
            if isinstance(v, float)
            and not k.endswith(("stderr", "steps", "n_train", "n_test"))
            and not k.startswith(("nearest_divergence.", "ideal."))
        )
        log.info("eval of %s at step %d: %s", path, report["step"], shown)
    if not single:
        write_summary_file(root / "eval.csv", csv_text(rows).encode())
        # sweep.csv and sweep.png too (e.g. for a sweep run elsewhere), from the rows read above
        write_sweep_summary(root, jobs)
        failed = [r["job"] for r in rows if r["status"] != "ok"]
        if failed:
            raise UserError(
                "run", f"jobs {', '.join(failed)} could not be evaluated (see eval.csv)"
            )
