"""The Hydra task functions behind `gandiv train` and `gandiv eval`.

This is the boundary where Hydra's config and global state are read; everything it calls takes
plain arguments. Order matters for the user-error contract: the whole config is validated and
every object is built before the first training step, so a bad input stops with one line and
leaves no half-trained run behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gandiv import config as C
from gandiv.build import (
    OBJECTIVE_CLASSES,
    build_critic,
    build_dataset,
    build_model,
    build_objective,
    build_optimizer,
    check_combination,
    mmd_settings,
    resolve_device,
    unused_mmd_keys,
)
from gandiv.data.images import ImageData, ImageSplits, to_uint8_images
from gandiv.data.splits import ToySplits
from gandiv.data.toy import Mixture, ToyData
from gandiv.divergences import DIVERGENCE_NAMES, FDivergence, get_divergence
from gandiv.errors import (
    EXIT_CRASH,
    EXIT_NUMERICAL,
    EXIT_USER_ERROR,
    Interrupted,
    NumericalError,
    UserError,
)
from gandiv.evaluation.critic import CriticBudget, independent_critics
from gandiv.evaluation.distances import sample_distances
from gandiv.evaluation.ground_truth import ground_truth_metrics
from gandiv.evaluation.ideal import (
    GaussianFit,
    IdealSearch,
    Landscape,
    compare,
    nearest_divergence,
)
from gandiv.evaluation.kde import kde_ground_truth
from gandiv.evaluation.modes import mode_metrics
from gandiv.evaluation.spread import displayed_data, has_spread_metrics, spread_metrics
from gandiv.models import GaussianModel, LinearGenerator
from gandiv.models.base import GenerativeModel, LatentGenerator
from gandiv.objectives.base import Objective
from gandiv.objectives.likelihood import Direct
from gandiv.objectives.spread import SpreadKL
from gandiv.plotting.images import image_grid_figure
from gandiv.sweep import csv_text, write_sweep_summary
from gandiv.training.distributed import (
    agree_signal,
    current,
    rank_checkpoint,
    rank_seed,
    replicate,
    run_directory,
)
from gandiv.training.figures import FigureSet, ImageFigures, RunFigures, save_figures
from gandiv.training.health import RunSettings, assess, parameter_change, warning_line
from gandiv.training.loop import Cadence, RunTask, TrainResult, train_runs
from gandiv.training.loop import train as train_loop
from gandiv.training.run_dir import RunDirectory, atomic_write_bytes
from gandiv.training.speed import StepPrecision, compile_networks, resolve_precision, tune_device
from gandiv.training.vectorized import (
    CPU_GROUP_BYTES,
    VectorizedStep,
    cache_group_size,
    loss_order,
    noise_shape,
    unvectorizable,
)

log = logging.getLogger("gandiv")

# Seed of the fixed noise behind samples.npy (the same for every run, so runs are comparable).
SAMPLES_SEED = 20_240_601
# Offset of the evaluation noise stream from the training seed (evaluation never draws from the
# training generator, so changing the evaluation cadence never changes training).
EVAL_SEED_OFFSET = 1_000_003
# Image runs save this many final samples (uint8 NHWC) at most in samples.npy.
IMAGE_SAMPLES = 64
# Test images in a spread run's figures/eval_reconstructions.png (one row each: x, y, G(μ(y))).
RECONSTRUCTED = 8
# Model samples drawn at a time on image runs (bounds the generator's activation memory).
IMAGE_CHUNK = 256


def image_size(data: ToyData | ImageData) -> int | None:
    """The side of an image dataset's images (None for vector data)."""
    return data.size if isinstance(data, ImageData) else None


def sample_in_chunks(
    model: GenerativeModel, n: int, generator: torch.Generator, chunk: int = IMAGE_CHUNK
) -> torch.Tensor:
    """`n` model samples drawn `chunk` at a time, without gradients."""
    with torch.no_grad():
        return torch.cat([model.sample(min(chunk, n - i), generator) for i in range(0, n, chunk)])


def eval_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The noise of the ground-truth metrics at `step` (apart from the training noise)."""
    return torch.Generator(device=device).manual_seed(seed + EVAL_SEED_OFFSET * (step + 1))


# ------------------------------------------------------------------------------------------------
# gandiv train
def _job_overrides() -> list[str]:
    """The task overrides of this job, without ``resume=``, last value per key."""
    latest: dict[str, str] = {}
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0]
        if key.lstrip("+~") != "resume":
            latest.pop(key, None)
            latest[key] = override
    return list(latest.values())


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config containers."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _check_resumable(
    run: RunDirectory, state: dict[str, Any], config: dict[str, Any], steps: int
) -> None:
    allowed = C.RESUMABLE_KEYS
    changed = [k for k in _differences(state["config"], config) if k not in allowed]
    if changed:
        may = ", ".join(sorted(allowed))
        raise UserError(
            "resume",
            f"{', '.join(changed)} differ from the run's config; resuming may only change {may}",
        )
    step = int(state["step"])
    finished = run.summary_path.is_file() and _status(run) in ("completed", "failed")
    if step > steps or (step == steps and finished):
        raise UserError(
            "trainer.steps",
            f"the run already reached step {state['step']}; pass a larger trainer.steps to "
            "extend it",
        )
    logged = run.metrics_path.stat().st_size if run.metrics_path.is_file() else 0
    if logged < int(state["metrics_bytes"]):  # a resume would pad the log with zero bytes
        raise UserError(
            str(run.metrics_path),
            f"has {logged} bytes but the checkpoint recorded {state['metrics_bytes']}; the log "
            "was cut or replaced after the checkpoint, so the run cannot be resumed exactly",
        )


def _status(run: RunDirectory) -> str | None:
    try:
        status = json.loads(run.summary_path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


def _discard_unused(run: RunDirectory) -> None:
    """Remove a run directory Hydra created for a run that was refused before it started."""
    if not run.writes:  # (torchrun) the directory is rank 0's
        return
    if run.path.is_dir() and {p.name for p in run.path.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(run.path, ignore_errors=True)


# The instance-noise options of the adversarial objectives, used only with objective.noise set.
NOISE_KEYS = ("sigma", "sigma_start", "anneal_steps", "samples")


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


def record_failure(run: RunDirectory, error: str, exit_code: int, **fields: Any) -> None:
    """Note in summary.json why the run stopped (for sweep.csv), never over a completed run's."""
    if _status(run) != "completed":
        run.write_summary({**fields, "status": "failed", "exit_code": exit_code, "error": error})


def train(cfg: DictConfig) -> None:
    """`gandiv train`: validate, build, train, write the run directory.

    Under the vectorized launcher (`deferring`) a job that can join a vectorised group is only
    validated and built here; `train_deferred` trains it with its group after the last job.
    """
    run = run_directory(HydraConfig.get().runtime.output_dir, current())
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        prepared = _prepare_training(cfg, run, multirun)
    except UserError as err:
        if multirun:  # the sweep's table shows the failed job
            record_failure(run, str(err), EXIT_USER_ERROR)
        elif cfg.get("resume") is None:
            _discard_unused(run)
        raise
    if prepared is None:  # this sweep job had already completed
        return
    if _deferred is not None and prepared.group_key() is not None:
        _deferred.append(prepared)
        return
    with _recording_crash([run], multirun):
        prepared.train_alone()


@contextmanager
def _recording_crash(runs: Sequence[RunDirectory], multirun: bool) -> Iterator[None]:
    """In a sweep, a bug's traceback goes to the jobs' logs and the failure to their summaries."""
    try:
        yield
    except (UserError, NumericalError, Interrupted):
        raise
    except Exception as err:
        if multirun:
            log.exception("job crashed")
            for run in runs:
                record_failure(run, f"{type(err).__name__}: {err}", EXIT_CRASH)
        raise


# Jobs set aside for vectorised training while the vectorized launcher runs a sweep (None: off).
_deferred: list[PreparedRun] | None = None


@contextmanager
def deferring() -> Iterator[list[PreparedRun]]:
    """While active, `train` sets aside the jobs that can be vectorised (the list yielded)."""
    global _deferred
    pending: list[PreparedRun] = []
    _deferred = pending
    try:
        yield pending
    finally:
        _deferred = None


def vectorized_groups(
    pending: Sequence[PreparedRun], max_group: int | None
) -> list[list[PreparedRun]]:
    """The set-aside jobs in groups of equal `PreparedRun.group_key`, in the sweep's order, each
    cut into groups of at most `max_group` runs (0: no limit; None: `cache_group_size`)."""
    groups: dict[Any, list[PreparedRun]] = {}
    for prepared in pending:
        groups.setdefault(prepared.group_key(), []).append(prepared)
    cut = []
    for group in groups.values():
        first = group[0]
        size = max_group
        if size is None:
            trainer = first.config.trainer
            size = cache_group_size(
                first.task.model, first.task.objective, trainer.batch_size, first.device
            )
            if 0 < size < len(group):
                log.info(
                    "max_group=auto: %d compatible jobs at a time of %d (on the CPU a group's "
                    "layer outputs stay within %d KiB; set hydra.launcher.max_group to change)",
                    size,
                    len(group),
                    CPU_GROUP_BYTES // 1024,
                )
        size = size or len(group)
        cut += [group[i : i + size] for i in range(0, len(group), size)]
    return cut


def train_group(group: Sequence[PreparedRun]) -> list[tuple[PreparedRun, NumericalError]]:
    """Train a group of set-aside sweep jobs (`vectorized_groups`) in one process: two or more as
    one vectorised computation, one alone. Every run writes its own directory exactly as alone;
    returns the runs that stopped on a non-finite value (recorded in their summaries)."""
    if len(group) == 1:
        with _job_log(group[0]), _recording_crash([group[0].run], multirun=True):
            try:
                group[0].train_alone()
            except NumericalError as err:
                return [(group[0], err)]
        return []
    group = sorted(group, key=lambda p: loss_order(p.task.objective))  # runs sharing a loss adjoin
    first = group[0].config.trainer
    group[0].apply_process_settings()  # (the group key makes them the same for every run)
    tasks = [p.task for p in group]
    failed: list[tuple[PreparedRun, NumericalError]] = []

    def stopped(k: int, error: NumericalError) -> None:  # as it happens, the others train on
        log.error("%s", error, extra={"job": group[k]})  # (in that job's log only)
        group[k].failed(error)
        failed.append((group[k], error))

    try:
        with _recording_crash([p.run for p in group], multirun=True):
            for prepared in group:
                with _job_log(prepared):
                    prepared.announce()
            with _job_log(*group):
                log.info("training %d runs as one vectorised group", len(group))
                step = partial(
                    VectorizedStep,
                    critic_steps=first.critic_steps,
                    batch_size=first.batch_size,
                    autocast=group[0].precision.autocast,
                )
                results = train_runs(
                    tasks,
                    step,
                    group[0].cadence,
                    first.progress,
                    f"train ×{len(group)}",
                    on_failure=stopped,
                )
            for prepared, result in zip(group, results, strict=True):
                if result.error is None:
                    with _job_log(prepared):
                        prepared.finish(result)
    except Interrupted as err:
        for prepared in group:
            prepared.interrupted(err)
        raise
    finally:
        for prepared in group:
            prepared.run.close()
    return failed


class _OnlyJob(logging.Filter):
    """Lets through records for any job (no `job` attribute) or for this one."""

    def __init__(self, job: PreparedRun) -> None:
        super().__init__()
        self.job = job

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "job", self.job) is self.job


def _consoles() -> list[logging.Handler]:
    """The root logger's handlers that write to a stream rather than a file."""
    return [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


@contextmanager
def _job_log(*jobs: PreparedRun) -> Iterator[None]:
    """Log records go to these jobs' log files too (Hydra opened each only while preparing it),
    and to the console in the jobs' format (not the launcher's); a record with
    `extra={"job": job}` goes to that job's file only."""
    root = logging.getLogger()
    consoles = _consoles()
    launcher_formats = [h.formatter for h in consoles]
    if jobs and jobs[0].console_format is not None:
        for console in consoles:
            console.setFormatter(jobs[0].console_format)
    handlers = []
    for job in jobs:
        if job.log_file is not None:
            handler = logging.FileHandler(job.log_file)
            handler.setFormatter(job.log_format)
            handler.addFilter(_OnlyJob(job))
            handlers.append(handler)
            root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        for console, launcher_format in zip(consoles, launcher_formats, strict=True):
            console.setFormatter(launcher_format)


@dataclasses.dataclass
class PreparedRun:
    """A `gandiv train` job validated and built, its run directory set up, not yet trained."""

    task: RunTask
    config: C.TrainConfig
    device: torch.device
    precision: StepPrecision  # autocast around the step's losses
    data_dim: int
    images: bool
    resumed: bool
    started: float  # when preparing began (the run's wall time counts from here)
    job_num: int | None  # the job's number in a sweep
    log_file: str | None  # the job's log file and its format (Hydra's job logging)
    log_format: logging.Formatter | None
    console_format: logging.Formatter | None  # the job's console format
    ideal: IdealSearch | str  # the search for the target's ideal, or why there is none
    # the model's parameters as built, before any step or resumed checkpoint (run health)
    initial_parameters: dict[str, torch.Tensor] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.initial_parameters = {
            name: p.detach().clone() for name, p in self.task.model.named_parameters()
        }

    @property
    def run(self) -> RunDirectory:
        return self.task.run

    @property
    def cadence(self) -> Cadence:
        trainer, plot = self.config.trainer, self.config.plot
        return Cadence(
            trainer.steps,
            trainer.log_every,
            trainer.eval_every,
            trainer.checkpoint_every,
            plot.every,
            plot.figures_every,
        )

    def group_key(self) -> tuple[Any, ...] | None:
        """What the runs of one vectorised group share (None: this run trains alone): the
        networks' shapes, the data's dimension, the loop's shape and cadences, the step it
        starts from. Seeds, learning rates, betas and the loss (row, π, model step) may differ.
        Compiled networks (trainer.compile) train alone: a group runs its own stacked networks."""
        trainer = self.config.trainer
        if trainer.compile or unvectorizable(self.task.model, self.task.objective) is not None:
            return None
        return (
            repr(self.config.model),
            repr(self.config.critic),
            noise_shape(self.task.objective),
            self.data_dim,
            self.device,
            self.precision.name,
            trainer.batch_size,
            trainer.critic_steps,
            trainer.optimizer,
            trainer.threads,
            repr(self.cadence),
            self.task.resume_from["step"] if self.task.resume_from else 0,
        )

    def announce(self) -> None:
        config = self.config
        log.info(
            "%s: dataset=%s (%d-D) model=%s objective=%s device=%s, %s steps",
            "resuming " + str(self.run.path) if self.resumed else f"run directory {self.run.path}",
            config.dataset.name,
            self.data_dim,
            config.model.name,
            config.objective.name,
            self.device,
            config.trainer.steps,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.config.dataset.name,
            "model": self.config.model.name,
            "objective": self.config.objective.name,
            "precision": self.precision.name,
        }

    def apply_process_settings(self) -> None:
        """The process-wide settings this run trains with (a deferred run is trained after other
        jobs were prepared, each applying its own)."""
        if self.config.trainer.threads is not None:
            torch.set_num_threads(self.config.trainer.threads)
        tune_device(self.device)

    def train_alone(self) -> None:
        self.apply_process_settings()
        self.announce()
        try:
            result = train_loop(
                self.task,
                critic_steps=self.config.trainer.critic_steps,
                batch_size=self.config.trainer.batch_size,
                cadence=self.cadence,
                progress=self.config.trainer.progress,
                autocast=self.precision.autocast,
                agree_signal=agree_signal,
            )
        except NumericalError as err:
            self.failed(err)
            raise
        except Interrupted as err:
            self.interrupted(err)
            raise
        finally:
            self.run.close()
        self.finish(result)

    def interrupted(self, err: Interrupted) -> None:
        """Say so in summary.json, unless the run had already stopped on a non-finite value."""
        if _status(self.run) != "failed":
            summary = {**self.summary(), "status": "interrupted", "signal": err.signum}
            self.run.write_summary(summary)

    def failed(self, error: NumericalError) -> None:
        """Record in summary.json that the run stopped on a non-finite value."""
        record_failure(self.run, str(error), EXIT_NUMERICAL, **self.summary())

    def finish(self, result: TrainResult) -> None:
        """The run's final files: figures, samples, summary (with the fit against its ideal, and
        its health, whose warning is the log's last line)."""
        summary = self.summary()
        summary["ideal"] = ideal_block(self.ideal, self.task.model)
        health = _finish(
            self.run,
            self.task.model,
            result,
            summary,
            self.config.trainer.num_samples,
            self.started,
            self.device,
            self.task.figures,
            partial(self.health, result.step),
        )
        if self.images:
            log.info("images: figures/samples.png, samples.npy (uint8 NHWC)")
        warning = warning_line(health) if health is not None else None
        if warning is not None:
            log.warning("%s", warning)

    def health(
        self, step: int, records: list[dict[str, Any]], samples: np.ndarray | None, gap: Any
    ) -> dict[str, Any]:
        """The summary's health block (gandiv.training.health) of this run at its last `step`."""
        trainer, objective = self.config.trainer, self.config.objective
        adversarial = self.task.objective.uses_critic
        critic = self.config.critic if adversarial else None
        settings = RunSettings(
            objective=objective.name,
            adversarial=adversarial,
            lr_g=trainer.lr_g or trainer.lr,
            lr_d=(trainer.lr_d or trainer.lr) if adversarial else None,
            shared_lr=trainer.lr_g is None and trainer.lr_d is None,
            steps=trainer.steps,
            batch_size=trainer.batch_size,
            critic_steps=trainer.critic_steps,
            spectral_norm=getattr(critic, "spectral_norm", None),
            gradient_penalty=getattr(objective, "gradient_penalty", None),
            noise=getattr(objective, "noise", None) if adversarial else None,
            generator=getattr(objective, "generator", None),
            divergence=getattr(objective, "divergence", None),
            init_std=getattr(self.config.model, "init_std", None),
        )
        data = getattr(self.task.splits, "data", None)
        final = dict(self.task.model.named_parameters())
        return assess(
            records,
            settings,
            change=parameter_change(self.initial_parameters, final) if step > 0 else None,
            samples=samples,
            box=data.bounds().numpy() if isinstance(data, ToyData) else None,
            gap=gap if isinstance(gap, int | float) else None,
            annealed=getattr(objective, "sigma_start", None) is not None,
        )


def _prepare_training(cfg: DictConfig, run: RunDirectory, multirun: bool) -> PreparedRun | None:
    started = time.perf_counter()
    config = C.validate_train_config(cfg)
    trainer = config.trainer
    plain: dict[str, Any] = {
        str(k): v
        for k, v in OmegaConf.to_container(cfg, resolve=True).items()  # type: ignore[union-attr]
        if k != "resume"
    }

    state = None
    # A sweep's job that finds its own checkpoint was requeued (preempted or timed out under a
    # scheduler, e.g. submitit), or its sweep is run again into the same hydra.sweep.dir: it
    # continues exactly where it stopped; one that had already completed is kept as it is.
    if config.resume is not None or (multirun and run.checkpoint_path.is_file()):
        state = rank_checkpoint(run.load_checkpoint(), current())
        done = _status(run) == "completed" and int(state["step"]) == trainer.steps
        if config.resume is None and done and not _differences(state["config"], plain):
            log.info("%s: this job already completed; kept as it is", run.path)
            return None
        _check_resumable(run, state, plain, trainer.steps)

    data = build_dataset(config.dataset)
    check_combination(config.objective, config.model, data, trainer.batch_size, config.critic)
    device = resolve_device(trainer.device, "trainer.device")
    if state is not None and state["device"] != device.type:  # before the run's files change
        raise UserError(
            "trainer.device",
            f"the run was trained on {state['device']} and can only be resumed there "
            f"(this resume would use {device.type}); set trainer.device={state['device']}",
        )
    n_train = None if isinstance(data, ImageData) else config.dataset.n_train
    if n_train is not None and trainer.batch_size > n_train:
        raise UserError(
            "trainer.batch_size",
            f"{trainer.batch_size} is larger than the training set (dataset.n_train={n_train})",
        )
    precision = StepPrecision(resolve_precision(trainer.precision, device), device)
    torch.manual_seed(
        trainer.seed
    )  # (threads and device tuning: PreparedRun.apply_process_settings)
    # images: the copy is read (its cache built the first time) before anything is trained
    images = data.load(trainer.progress) if isinstance(data, ImageData) else None
    model = build_model(config.model, data.dim, image_size(data)).to(device)
    objective = build_objective(
        config.objective, data, config.critic, trainer.grid_points, model=model
    ).to(device)
    optimizer = build_optimizer(
        [*model.parameters(), *objective.joint_parameters()],
        trainer.optimizer,
        trainer.lr_g or trainer.lr,
        trainer.betas,
    )
    critic_optimizer = (
        build_optimizer(
            objective.critic_parameters(),
            trainer.optimizer,
            trainer.lr_d or trainer.lr,
            trainer.betas_d or trainer.betas,
        )
        if objective.uses_critic
        else None
    )
    if trainer.compile:
        compiled = compile_networks(model, objective)
        log.info("trainer.compile: compiling %s", ", ".join(compiled) or "nothing (no networks)")
    seed = rank_seed(trainer.seed, current())  # (torchrun: each rank its own stream)
    splits: ToySplits | ImageSplits
    if isinstance(data, ImageData):
        assert images is not None
        splits = ImageSplits(images, device, data.on_device, seed)
    else:
        splits = ToySplits(data, n_train, config.dataset.n_test, config.dataset.seed).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    replicate(current(), (model, objective), optimizer, critic_optimizer)

    _warn_ignored(config, data)

    if state is not None:  # accepted: record the extended config in the run's own .hydra/
        run.write_text(".hydra/config.yaml", OmegaConf.to_yaml(cfg))
        run.write_text(".hydra/overrides.yaml", OmegaConf.to_yaml(_job_overrides()))

    cache: dict[Any, Any] = {}
    extra = {"objective_divergence": objective.divergence} if objective.divergence else None

    exact = model.has_density and data.has_density
    # images: no ground truth exists (the loop logs losses only)
    measured = not isinstance(data, ImageData) and (
        exact or has_spread_metrics(data, model, objective.spread)
    )
    spread_cache: dict[Any, Any] = {}

    def evaluate(step: int) -> dict[str, float]:
        assert isinstance(data, ToyData)
        noise = eval_generator(trainer.seed, step, device)
        model.eval()
        metrics: dict[str, float] = {}
        if exact:  # (with spread noise the objective's divergence is between P̃ and Q̃)
            metrics = ground_truth_metrics(
                data,
                model,
                noise,
                points=trainer.grid_points,
                extra=extra if objective.spread is None else None,
                cache=cache,
            )
        metrics.update(
            spread_metrics(
                data,
                model,
                objective.spread_kernel,
                noise,
                trainer.grid_points,
                (),
                extra,
                spread_cache,
            )
        )
        model.train()
        return metrics

    if trainer.threads is not None:  # the searches below run at the run's own thread count
        torch.set_num_threads(trainer.threads)
    fresh_direct = state is None and isinstance(objective, Direct) and data.dim <= 2
    if fresh_direct and isinstance(objective, Direct) and isinstance(model, GaussianModel):
        log.info(objective.start(model))  # it starts where descent reaches the global optimum
    ideal = ideal_search(config, data, model, objective) if run.writes else "not written"
    figures = None
    if (data.dim <= 2 or isinstance(data, ImageData)) and run.writes:
        figures = run_figures(config, data, model, objective, device, ideal)
    file_logs = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    consoles = _consoles()
    return PreparedRun(
        task=RunTask(
            run,
            splits,
            model,
            objective,
            optimizer,
            critic_optimizer,
            generator,
            evaluate if measured and run.writes else None,
            plain,
            figures,
            state,
        ),
        config=config,
        device=device,
        precision=precision,
        data_dim=data.dim,
        images=isinstance(data, ImageData),
        resumed=state is not None,
        started=started,
        job_num=HydraConfig.get().job.num if multirun else None,
        log_file=file_logs[0].baseFilename if file_logs else None,
        log_format=file_logs[0].formatter if file_logs else None,
        console_format=consoles[0].formatter if consoles else None,
        ideal=ideal,
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


def _warn_ignored(config: C.TrainConfig, data: ToyData | ImageData) -> None:
    """A warning for the overrides this run does not read, one per reason."""
    objective = config.objective
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (
            ("critic", "trainer.lr_d", "trainer.betas_d", "trainer.critic_steps"),
            not OBJECTIVE_CLASSES[objective.name].uses_critic,
            f"objective={objective.name} trains no critic",
        ),
        (
            tuple(f"objective.{k}=" for k in NOISE_KEYS),
            getattr(objective, "noise", None) == "none",
            "objective.noise=none adds no instance noise; set objective.noise=gaussian or laplace",
        ),
        (
            ("objective.encoder_depth=",),
            isinstance(data, ImageData),
            "the convolutional encoder's depth follows dataset.size",
        ),
    ]
    if isinstance(objective, C.MMDConfig):
        features, scale = mmd_settings(objective, data)
        rules.append(
            (
                tuple(f"objective.{k}=" for k in unused_mmd_keys(objective, data)),
                True,
                f"objective=mmd with features={features}, bandwidth_scale={scale} here",
            )
        )
    overrides = _job_overrides()
    keys = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    trainer = config.trainer
    if "trainer.lr" in keys and trainer.lr_d is not None and "trainer.lr_d" not in keys:
        log.warning(
            "trainer.lr=%g sets the model's learning rate only: objective=%s gives its critic its "
            "own, trainer.lr_d=%g (set trainer.lr_d too, or trainer.lr_d=null for one rate)",
            trainer.lr,
            objective.name,
            trainer.lr_d,
        )
    for prefixes, applies, why in rules:
        unused = [o for o in overrides if o.lstrip("+~").startswith(prefixes)]
        if applies and unused:
            log.warning("ignored: %s (%s)", " ".join(unused), why)


def _finish(
    run: RunDirectory,
    model: GenerativeModel,
    result: TrainResult,
    summary: dict[str, Any],
    num_samples: int,
    started: float,
    device: torch.device,
    figures: FigureSet | None,
    health: Callable[[list[dict[str, Any]], np.ndarray | None, Any], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Write the run's final figures, samples.npy and summary.json; return its health block
    (None when not assessed: `health` None, or a torchrun rank that writes nothing)."""
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


# ------------------------------------------------------------------------------------------------
# gandiv eval
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


def evaluate_run(path: Path, options: C.EvalConfig) -> dict[str, Any]:
    """Every metric of DESIGN.md §5 for one finished run, on its held-out split."""
    config, state = load_run(path)
    device = resolve_device(options.device, "device")
    data, model, objective = restore(path, config, state, device)
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
    generator = torch.Generator(device=device).manual_seed(options.seed)
    with torch.no_grad():
        samples = model.sample(settings.num_samples, generator)
    report: dict[str, Any] = {"step": int(state["step"]), "n_test": len(splits.test)}

    # held-out likelihood and ground truth ------------------------------------------------------
    row = objective.divergence
    extra = {"objective_divergence": row} if row is not None else None
    if model.has_density:
        with torch.no_grad():
            report["heldout_nll"] = float(-model.log_prob(splits.test).mean())
        noise = eval_generator(config.trainer.seed, report["step"], device)
        truth: dict[str, Any] = ground_truth_metrics(
            data, model, noise, settings.grid_points, settings.pis, extra
        )
        report["ground_truth"] = {
            **truth,
            "method": "quadrature" if data.dim <= 2 else "monte_carlo",
        }
        report.update(_ideals(config, data, model, objective, settings))
    else:
        report["heldout_nll"] = None
        report["heldout_nll_reason"] = (
            f"model={config.model.name} is an implicit generator: it has no density"
        )
        report.update(_spread_bound(objective, model, splits.test, generator))
        if not data.has_density:
            report["ground_truth"] = None
            report["ground_truth_reason"] = "the data have no density (a curve of zero width)"
        elif data.dim <= 2:
            # its own CPU stream: the critics below draw the same numbers as without it
            kde_noise = torch.Generator().manual_seed(options.seed)
            truth = kde_ground_truth(
                data,
                samples,
                settings.grid_points,
                settings.pis,
                settings.kde_bandwidth,
                extra,
                kde_noise,
            )
            report["ground_truth"] = truth
            if not truth["reliable"]:
                log.warning("no kernel-density ground truth for %s: %s", path, truth["reason"])
        else:
            report["ground_truth"] = None
            report["ground_truth_reason"] = "kernel-density estimates are made in 1-D/2-D only"
    if has_spread_metrics(data, model, objective.spread):
        noise = eval_generator(config.trainer.seed, report["step"], device)
        report["spread_ground_truth"] = spread_metrics(
            data, model, objective.spread_kernel, noise, settings.grid_points, settings.pis, extra
        )

    # independent critics ---------------------------------------------------------------------
    budget = CriticBudget(
        steps=settings.critic.steps,
        batch_size=settings.critic.batch_size,
        lr=settings.critic.lr,
        ema=settings.critic.ema,
        gradient_penalty=settings.critic.gradient_penalty,
        one_sided=settings.critic.one_sided,
        model_samples=settings.critic.model_samples,
    )

    def sample_model(n: int, noise: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            return model.sample(n, noise)

    report["independent_critic"] = _independent_critics(
        settings,
        splits.test,
        sample_model,
        lambda: build_critic(options.critic, data.dim).to(device),
        budget,
        generator,
    )

    # modes and sample distances -----------------------------------------------------------------
    if isinstance(data, Mixture):
        report["modes"] = mode_metrics(samples, data)
    report["sample_distances"] = sample_distances(splits.test, samples, generator)
    return report


def _ideals(
    config: C.TrainConfig,
    data: ToyData,
    model: GenerativeModel,
    objective: Objective,
    settings: C.EvalOptions,
) -> dict[str, Any]:
    """eval.json's ``ideal`` (the fit against its target's ideal) and ``nearest_divergence`` (the
    fit against the ideal of every divergence of ``eval.nearest``), or why there are none."""
    found = ideal_search(config, data, model, objective)
    out: dict[str, Any] = {"ideal": ideal_block(found, model)}
    if not isinstance(model, GaussianModel) or not data.has_density or data.dim > 2:
        out["nearest_divergence"] = None
        out["nearest_divergence_reason"] = (
            "ideals are computed for model=gaussian on 1-D/2-D data with a density"
        )
        return out
    if not settings.nearest:
        return out
    searches = {}
    for name in settings.nearest:
        for pi in settings.pis if name == "js_pi" else [None]:
            row = get_divergence(name, pi)
            searches[row.name] = cached_search(config, data, row)
    fit = GaussianFit.of(model.mean.detach().cpu(), model.covariance.detach().cpu())
    nearest = nearest_divergence(searches, fit)
    out["nearest_divergence"] = nearest
    ranking = nearest["ranking"]
    rows = nearest["divergences"]
    alike = nearest["indistinguishable"]
    log.info(
        "nearest divergence: %s, %.3g from its ideal%s; next: %s",
        ranking[0],
        rows[ranking[0]]["distance"],
        f" (its ideal and that of {', '.join(alike)} lie closer together than the fit: "
        "these data cannot tell them apart)"
        if alike
        else "",
        ", ".join(f"{n} {rows[n]['distance']:.3g}" for n in ranking[1:4] if n not in alike),
    )
    return out


def _independent_critics(
    settings: C.EvalOptions,
    real: torch.Tensor,
    sample_model: Any,
    make_critic: Any,
    budget: CriticBudget,
    generator: torch.Generator,
) -> dict[str, Any]:
    """The independent critics' estimates of ``eval.critic.divergences`` (js_pi at the first of
    ``eval.pis``), cross-fitted over the two halves of `real`."""
    pi = settings.pis[0] if settings.pis else None
    try:
        return independent_critics(
            settings.critic.divergences, real, sample_model, make_critic, budget, generator, pi=pi
        )
    except ValueError as err:
        raise UserError("eval.critic.divergences", str(err)) from None


def _image_critic(options: C.EvalConfig, config: C.TrainConfig) -> C.DCGANCriticConfig:
    """The independent critic of an image run: critic=dcgan as given to eval, else the run's own
    critic settings (without its EMA), else conf/critic/dcgan.yaml."""
    if isinstance(options.critic, C.DCGANCriticConfig):
        return options.critic
    if isinstance(config.critic, C.DCGANCriticConfig):
        return dataclasses.replace(config.critic, ema=0.0)
    node = OmegaConf.load(str(files("gandiv.conf") / "critic" / "dcgan.yaml"))
    return cast(C.DCGANCriticConfig, C.to_schema("critic", node, C.DCGANCriticConfig))


def _spread_bound(
    objective: Objective, model: GenerativeModel, test: torch.Tensor, generator: torch.Generator
) -> dict[str, Any]:
    """A spread run's held-out NLL bound (nats per point) and what it is; nothing for others."""
    if not (isinstance(objective, SpreadKL) and isinstance(model, LatentGenerator)):
        return {}
    return {
        "heldout_nll": objective.heldout_bound(model, test, generator),
        "heldout_nll_reason": (
            f"an upper bound: −(importance-weighted bound, {objective.iw_samples} samples) on "
            f"log q̃ of {len(test)} held-out points with spread noise σ={objective.kernel.sigma:g}"
        ),
    }


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
    """An image run's evaluation: the independent DCGAN critic on the test partition, sample
    grids (figures/eval_samples.png, figures/test_images.png), and for a spread run the bound on
    its held-out likelihood. No density or ground truth exists."""
    settings = options.eval
    budget_of = settings.images
    splits = ImageSplits(data.load(progress=True), device, on_device=False)
    test = splits.test(budget_of.test_images)
    if len(test) < 4:
        raise UserError(
            str(splits.data.layout.partition_file),
            f"the test partition has {len(test)} images; evaluation needs at least 4",
        )
    generator = torch.Generator(device=device).manual_seed(options.seed)
    critic_config = _image_critic(options, config)
    report: dict[str, Any] = {
        "step": int(state["step"]),
        "n_test": len(test),
        "heldout_nll": None,
        "heldout_nll_reason": (
            f"model={config.model.name} is an implicit generator: it has no density"
        ),
        "ground_truth": None,
        "ground_truth_reason": f"no density is known for images (dataset={data.name})",
        **_spread_bound(objective, model, test[: budget_of.nll_images], generator),
        "independent_critic_architecture": {
            k: v for k, v in dataclasses.asdict(critic_config).items() if k != "ema"
        },
    }
    budget = CriticBudget(
        steps=budget_of.steps,
        batch_size=budget_of.batch_size,
        lr=settings.critic.lr,
        ema=settings.critic.ema,
        gradient_penalty=settings.critic.gradient_penalty,
        one_sided=settings.critic.one_sided,
        model_samples=None,  # as many as the held-out images each critic scores
    )
    report["independent_critic"] = _independent_critics(
        settings,
        test,
        lambda n, noise: sample_in_chunks(model, n, noise),
        lambda: build_critic(critic_config, data.dim, data.size).to(device),
        budget,
        generator,
    )
    report["sample_distances"] = None
    report["sample_distances_reason"] = "pixel-space sample distances are not computed for images"
    run = RunDirectory(path)
    title = f"{run_title(config)} · step {report['step']}"
    shown = sample_in_chunks(model, budget_of.grid, generator)
    real = to_uint8_images(test[: budget_of.grid])
    grids = {
        "eval_samples": image_grid_figure(to_uint8_images(shown), 8, f"model samples · {title}"),
        "test_images": image_grid_figure(real, 8, f"test partition · {data.name}"),
    }
    if isinstance(objective, SpreadKL) and isinstance(model, LatentGenerator):
        shown = test[:RECONSTRUCTED]
        noisy, rebuilt = objective.reconstructions(model, shown, generator)
        rows = to_uint8_images(torch.cat([shown, noisy, rebuilt]))
        grids["eval_reconstructions"] = image_grid_figure(
            rows,
            len(shown),
            f"rows: test images · with spread noise σ={objective.kernel.sigma:g} · "
            "G(mean of q(z|y))",
        )
    save_figures(run, grids)
    return report


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    return {prefix: value}


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
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    root = Path(options.run)
    single = (root / ".hydra" / "config.yaml").is_file()
    runs = [root] if single else sorted(p.parent.parent for p in root.glob("*/.hydra/config.yaml"))
    rows = []
    for path in runs:
        started = time.perf_counter()
        try:
            report = evaluate_run(path, options)
        except UserError as err:
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
        atomic_write_bytes(root / "eval.csv", csv_text(rows).encode())
        write_sweep_summary(root)  # sweep.csv and sweep.png too (e.g. for a sweep run elsewhere)
        failed = [r["job"] for r in rows if r["status"] != "ok"]
        if failed:
            raise UserError(
                "run", f"jobs {', '.join(failed)} could not be evaluated (see eval.csv)"
            )


# ------------------------------------------------------------------------------------------------
# gandiv plot
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
